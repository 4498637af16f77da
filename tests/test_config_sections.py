"""The model config in sections, and the old flat model keys still read (with one warning per key)."""

import warnings
from pathlib import Path

import pytest

from avseg.config import Config, ConfigDeprecationWarning, ConfigError, config_from_dict, config_to_dict, load_config
from avseg.config_compat import FLAT_KEYS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# one non-default value per old flat key, as YAML text, and the new key it lands in
VALUES = {
    "decomposition": "continuous", "recombination": "false", "local_calibration": "false", "num_tokens": "3",
    "asd_layers": "2", "separator": "nmf", "num_sources": "3", "codebook_size": "16", "codebook_ema": "true",
    "codebook_decay": "0.5", "dead_code_threshold": "0.1", "kmeans_init": "true", "tpavi_channels": "32",
    "tpavi_stages": "[1, 2]", "tpavi_window": "0", "tpavi_audio_bias": "false", "codebook_from_local": "true",
    "codebook_warmup_steps": "7", "audio_memory": "time_frequency", "local_query_audio": "true",
    "local_reads_global": "true", "tag_gating": "true",
}


def new_yaml(tmp_path: Path) -> Path:
    sections: dict[str, list[str]] = {}
    for old, value in VALUES.items():
        section, name = FLAT_KEYS[old]
        sections.setdefault(section, []).append(f"    {name}: {value}\n")
    text = "model:\n" + "".join(f"  {s}:\n" + "".join(lines) for s, lines in sections.items())
    path = tmp_path / "new.yaml"
    path.write_text(text)
    return path


def old_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "old.yaml"
    path.write_text("model:\n" + "".join(f"  {old}: {value}\n" for old, value in VALUES.items()))
    return path


def deprecations(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, ConfigDeprecationWarning)]


def test_every_old_key_has_a_new_one_and_the_values_differ_from_the_defaults(tmp_path):
    assert set(VALUES) == set(FLAT_KEYS)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigDeprecationWarning)
        config = load_config(new_yaml(tmp_path))
    default = Config().model
    for old, (section, name) in FLAT_KEYS.items():
        assert getattr(getattr(config.model, section), name) != getattr(getattr(default, section), name), old


def test_old_keys_in_a_yaml_file_give_the_same_config_with_one_warning_each(tmp_path):
    with pytest.warns(ConfigDeprecationWarning) as record:
        old = load_config(old_yaml(tmp_path))
    assert old == load_config(new_yaml(tmp_path))
    messages = deprecations(record)
    assert len(messages) == len(FLAT_KEYS)
    for key, (section, name) in FLAT_KEYS.items():
        line = [m for m in messages if f"'model.{key}'" in m]
        assert len(line) == 1 and f"'model.{section}.{name}'" in line[0] and "old.yaml" in line[0]


def test_old_keys_as_overrides_give_the_same_config(tmp_path):
    old = [f"model.{key}={value.replace(' ', '')}" for key, value in VALUES.items()]
    new = [f"model.{FLAT_KEYS[key][0]}.{FLAT_KEYS[key][1]}={value.replace(' ', '')}" for key, value in VALUES.items()]
    with pytest.warns(ConfigDeprecationWarning) as record:
        config = load_config(None, old)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigDeprecationWarning)
        assert config == load_config(None, new) == load_config(new_yaml(tmp_path))
    messages = deprecations(record)
    assert len(messages) == len(FLAT_KEYS)
    assert any("override 'model.decomposition=continuous'" in m and "'model.qsd.decomposition'" in m for m in messages)


def test_an_old_key_set_twice_warns_once():
    with pytest.warns(ConfigDeprecationWarning) as record:
        config = load_config(None, ["model.num_tokens=2", "model.num_tokens=4"])
    assert config.model.qsd.num_tokens == 4 and len(deprecations(record)) == 1


def test_a_stored_old_config_reads_into_the_sections(tmp_path):
    new = load_config(new_yaml(tmp_path))
    stored = config_to_dict(new)
    flat_name = {(section, name): old for old, (section, name) in FLAT_KEYS.items()}
    for section in ("qsd", "quantizer", "tpavi", "extras"):  # the flat model section of older checkpoints
        for name, value in stored["model"].pop(section).items():
            if (section, name) in flat_name:  # keys added after the sections (e.g. lookup_dim) are absent
                stored["model"][flat_name[section, name]] = value
    assert set(FLAT_KEYS) <= set(stored["model"])
    assert config_from_dict(stored) == new
    assert config_from_dict(config_to_dict(new)) == new
    # `avseg train --resume` compares the stored model section with the run's: the old one matches
    from avseg.config_compat import comparable_model_section as _model_section

    assert _model_section(stored) == _model_section(config_to_dict(new))
    assert _model_section(stored) != _model_section(config_to_dict(Config()))


def test_old_and_new_key_with_different_values_is_an_error_naming_both(tmp_path):
    path = tmp_path / "both.yaml"
    path.write_text("model:\n  decomposition: none\n  qsd:\n    decomposition: quantized\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "both.yaml" in message and "'model.decomposition'" in message and "'model.qsd.decomposition'" in message
    with pytest.raises(ConfigError, match=r"model\.tpavi_window=3.*model\.tpavi\.window=5"):
        load_config(None, ["model.tpavi_window=3", "model.tpavi.window=5"])
    with pytest.raises(ConfigError, match=r"stored config.*'model\.tag_gating'.*'model\.extras\.tag_gating'"):
        config_from_dict({"model": {"tag_gating": True, "extras": {"tag_gating": False}}})


def test_old_and_new_key_with_the_same_value_is_accepted(tmp_path):
    path = tmp_path / "same.yaml"
    path.write_text("model:\n  decomposition: none\n  qsd:\n    decomposition: none\n")
    with pytest.warns(ConfigDeprecationWarning):
        assert load_config(path).model.qsd.decomposition == "none"


def test_a_misspelt_new_key_is_still_an_unknown_key():
    with pytest.raises(ConfigError, match="model.qsd.decompositon"):
        load_config(None, ["model.qsd.decompositon=none"])


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_uses_the_new_keys(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigDeprecationWarning)
        if path.parent.name == "study":
            from avseg.study.spec import load_spec, run_config

            spec = load_spec(path)
            for row in spec.rows:
                run_config(spec, row.name, 0, Path("data"), Path("run"), None)
        else:
            load_config(path)


def test_a_study_started_with_the_old_keys_resumes(tmp_path):
    from omegaconf import OmegaConf

    from avseg.errors import UserError
    from avseg.study.runner import _check_resume
    from avseg.study.spec import load_spec, spec_to_dict

    spec = load_spec(CONFIGS / "study/row6_diagnosis.yaml")
    before = spec_to_dict(spec)  # as an older avseg stored it: flat model keys in the overrides
    old_keys = {f"model.{section}.{name}": f"model.{old}" for old, (section, name) in FLAT_KEYS.items()}

    def flat(items):
        return ["=".join([old_keys.get(k, k), v]) for k, _, v in (item.partition("=") for item in items)]

    before["overrides"] = flat(before["overrides"])
    for row in before["rows"]:
        row["overrides"] = flat(row["overrides"])
    assert "model.tag_gating=false" in before["overrides"]
    OmegaConf.save(OmegaConf.create(before), tmp_path / "spec.yaml")
    _check_resume(tmp_path, spec)  # the same study: resumes
    spec.rows[0].overrides.append("model.qsd.num_tokens=2")
    with pytest.raises(UserError, match="another spec"):
        _check_resume(tmp_path, spec)
