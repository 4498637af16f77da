"""The flat model keys of older configs, read into the model config's sections.

Until the model config was split into sections (`model.qsd`, `model.quantizer`, `model.tpavi`,
`model.extras`), every model option sat directly under `model`. Those flat keys are still read
from config files, `key=value` overrides, study specs and checkpoints' stored configs: each is
moved to its new key (`FLAT_KEYS`), and `load_config` warns once per key with
`ConfigDeprecationWarning`. A file, a dict or an override list that sets both the old and the new
key to different values is refused (`KeyConflict`). docs/model.md, "Config keys", has the table.

Plain dicts and strings only: no import of `avseg.config` (which imports this module).
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from avseg.config_model import ModelConfig

_SECTIONS = {
    "qsd": ("decomposition", "recombination", "local_calibration", "num_tokens", "asd_layers", "separator",
            "num_sources"),
    "quantizer": ("codebook_size", "codebook_ema", "codebook_decay", "dead_code_threshold", "kmeans_init"),
    "tpavi": ("tpavi_channels", "tpavi_stages", "tpavi_window", "tpavi_audio_bias"),
    "extras": ("codebook_from_local", "codebook_warmup_steps", "audio_memory", "local_query_audio",
               "local_reads_global", "tag_gating"),
}

# old flat field under `model` -> (section, field in that section)
FLAT_KEYS: dict[str, tuple[str, str]] = {
    old: (section, old.removeprefix("tpavi_") if section == "tpavi" else old)
    for section, fields in _SECTIONS.items() for old in fields
}


class ConfigDeprecationWarning(FutureWarning):
    """An old config key was read; the message names the key to use instead."""


class KeyConflict(ValueError):
    """The old and the new key of one option are both set, to different values."""


def new_key(old_key: str) -> str | None:
    """`model.decomposition` -> `model.qsd.decomposition` (also below a leaf: `model.tpavi_stages.0`);
    None for a key that is not an old flat model key."""
    parts = old_key.split(".")
    if len(parts) < 2 or parts[0] != "model" or parts[1] not in FLAT_KEYS:
        return None
    section, name = FLAT_KEYS[parts[1]]
    return ".".join(["model", section, name, *parts[2:]])


def translate_tree(tree: dict[str, Any]) -> list[tuple[str, str]]:
    """Move the old flat keys of a nested config dict to their sections, in place.

    Returns the (old key, new key) pairs moved; KeyConflict when a pair holds different values.
    """
    model = tree.get("model")
    if not isinstance(model, dict):
        return []
    moved = []
    for old in [key for key in model if key in FLAT_KEYS]:
        section, name = FLAT_KEYS[old]
        value = model.pop(old)
        target = model.get(section)
        if not isinstance(target, dict):  # absent, or an empty `qsd:` in YAML (None)
            target = model[section] = {}
        old_key, new = f"model.{old}", f"model.{section}.{name}"
        if name in target and target[name] != value:
            raise KeyConflict(f"'{old_key}' ({value!r}) and '{new}' ({target[name]!r}) set the same option "
                              f"to different values; '{old_key}' is the old name of '{new}': keep only '{new}'")
        target[name] = value
        moved.append((old_key, new))
    return moved


def translate_overrides(overrides: list[str]) -> tuple[list[str], list[tuple[str, str, str]]]:
    """Dotted `key=value` overrides with old keys renamed; (old key, new key, override) of each renamed.

    KeyConflict when the list sets an old key and its new key to different values.
    """
    renamed, moved, values = [], [], {}
    for item in overrides:
        key, sep, value = item.partition("=")
        new = new_key(key) if sep else None
        if new is not None:
            moved.append((key, new, item))
            item = f"{new}={value}"
        values.setdefault(item.partition("=")[0], []).append((key, value))
        renamed.append(item)
    for new, settings in values.items():
        clash = [(a, va, vb) for a, va in settings if a != new for b, vb in settings if b == new and va != vb]
        if clash:
            a, va, vb = clash[0]
            raise KeyConflict(f"'{a}={va}' and '{new}={vb}' set the same option to different values; "
                              f"'{a}' is the old name of '{new}': keep only '{new}'")
    return renamed, moved


def deprecation_message(old: str, new: str, source: str) -> str:
    return (f"{source}: config key '{old}' is deprecated, use '{new}' "
            "(the model config is in sections; docs/model.md, 'Config keys')")


def comparable_model_section(config: dict) -> dict:
    """The model section without the weight-file path (irrelevant once trained weights exist);
    a config stored with the old flat model keys is read into the sections first, and keys added
    to the model config since the checkpoint was written take their defaults (which is what the
    model it holds was built with)."""
    config = {"model": dict(config.get("model", {}))}
    translate_tree(config)  # moves keys within the copied model dict only
    model = config.get("model", {})
    try:
        model = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(ModelConfig), model))
    except OmegaConfBaseException:  # a key this version does not know: compared as stored (differs)
        pass
    return {k: v for k, v in model.items() if k != "backbone_weights"}
