"""One grammar for every command: `avseg COMMAND [CONFIG] [key=value ...] [--options]` (parse level).

CONFIG and overrides may stand anywhere among the options; `--random-init` is a plain flag;
`--device` defaults to auto; the old spellings (`--config`, `--batch`, `--quiet`, predict's
positional videos) still work this release and print one warning each.
"""

from argparse import Namespace

import pytest

from avseg.cli import main, parse
from avseg.cli_common import config_overrides_paths, resolve_device_name
from avseg.engine.evaluate import precision_overrides

CFG = "configs/cpu/qsd_r18_synth_avss.yaml"


def parsed(*argv: str) -> Namespace:
    return parse(list(argv))[1]


@pytest.mark.parametrize("argv", [
    ["predict", CFG, "data.image_size=64", "-i", "a.mp4", "--random-init", "--out", "o"],
    ["predict", "-i", "a.mp4", "--random-init", "--out", "o", CFG, "data.image_size=64"],
    ["app", "--random-init", CFG, "data.image_size=64"],
    ["bench", "predict", CFG, "--random-init", "data.image_size=64"],
    ["bench", "data", "--workers", "0", CFG, "data.image_size=64"],
])
def test_config_and_overrides_are_positional_anywhere(argv):
    args = parsed(*argv)
    assert config_overrides_paths(args, other_paths=argv[0] == "predict") == (CFG, ["data.image_size=64"], [])
    assert args.config is None  # no --config given: nothing to warn about


@pytest.mark.parametrize("argv, config, overrides", [
    (["train", "--resume", "auto", CFG, "train.epochs=2"], CFG, ["train.epochs=2"]),
    (["eval", CFG, "--checkpoint", "x.pt", "data.root=r"], CFG, ["data.root=r"]),
    (["model-info", CFG, "--random-init", "model.d_model=32"], CFG, ["model.d_model=32"]),
    (["pretrain-audio", CFG, "--out", "w.pt", "data.root=r"], CFG, ["data.root=r"]),
    (["export", CFG, "--random-init", "--onnx", "m.onnx", "data.image_size=64"], CFG, ["data.image_size=64"]),
])
def test_commands_with_a_required_config(argv, config, overrides):
    args = parsed(*argv)
    assert str(args.config) == config and args.overrides == overrides
    assert getattr(args, "random_init", True) is True  # a plain flag where the command has it


@pytest.mark.parametrize("argv", [
    ["predict", "-i", "a.mp4", "--out", "o"], ["app"], ["model-info", CFG], ["report", "runs/x"],
    ["bench", "speed"], ["bench", "train"], ["bench", "data"], ["bench", "predict"],
])
def test_device_defaults_to_auto(argv):
    assert parsed(*argv).device == "auto"
    assert parsed(*argv, "--device", "cpu").device == "cpu"


def test_device_of_train_and_eval_sets_train_device():
    for command in (["train", CFG], ["eval", CFG, "--checkpoint", "x.pt"]):
        assert parsed(*command).device is None  # the config's train.device (default auto)
        assert "train.device=cpu" in precision_overrides(parsed(*command, "--device", "cpu"))
        assert not any(o.startswith("train.device") for o in precision_overrides(parsed(*command)))


def test_auto_device_is_cuda_only_when_available(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device_name("auto") == "cpu" and resolve_device_name("cuda:1") == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device_name("auto") == "cuda"


@pytest.mark.parametrize("old, new", [
    (["predict", "-i", "a.mp4", "--out", "o", "--batch", "3"], ["predict", "-i", "a.mp4", "--out", "o", "--batch-size", "3"]),
    (["predict", "-i", "a.mp4", "--out", "o", "--config", CFG], ["predict", CFG, "-i", "a.mp4", "--out", "o"]),
    (["app", "--config", CFG, "--random-init"], ["app", CFG, "--random-init"]),
    (["bench", "data", "--config", CFG], ["bench", "data", CFG]),
    (["bench", "predict", "--config", CFG, "--random-init"], ["bench", "predict", CFG, "--random-init"]),
    (["check-data", "--layout", "s4", "root", "--quiet"], ["check-data", "--layout", "s4", "root", "--no-progress"]),
], ids=["predict--batch", "predict--config", "app--config", "bench-data--config", "bench-predict--config",
        "check-data--quiet"])
def test_old_options_still_work_and_warn(old, new, capsys):
    with_old = parsed(*old)
    err = capsys.readouterr().err
    option = next(a for a in old if a in ("--batch", "--config", "--quiet"))
    assert err.count("deprecated") == 1 and f"{option} is deprecated" in err and "; use " in err
    with_new = parsed(*new)
    assert "deprecated" not in capsys.readouterr().err
    if option == "--config":  # the alias fills what the positional CONFIG gives
        assert config_overrides_paths(with_old, other_paths=True)[0] == config_overrides_paths(with_new, other_paths=True)[0] == CFG
    else:
        assert vars(with_old) == vars(with_new)


def test_new_options_are_listed_and_old_ones_hidden(capsys):
    with pytest.raises(SystemExit):
        parse(["predict", "--help"])
    shown = capsys.readouterr().out
    assert "--batch-size" in shown and "--input" in shown and "--no-progress" in shown and "--device" in shown
    assert "--batch " not in shown and "--config" not in shown


def test_predict_old_positional_videos_are_videos_with_a_warning(capsys):
    args = parsed("predict", "a.mp4", "b.mp4", "--config", CFG, "--random-init", "data.image_size=64", "--out", "o")
    assert config_overrides_paths(args, other_paths=True) == (CFG, ["data.image_size=64"], ["a.mp4", "b.mp4"])
    args = parsed("predict", "a.mp4", "--checkpoint", "c.pt", "--out", "o")
    assert config_overrides_paths(args, other_paths=True) == (None, [], ["a.mp4"])


@pytest.mark.parametrize("argv, message", [
    (["model-info", CFG, "other.yaml"], "override 'other.yaml': expected key=value"),
    (["bench", "data", CFG, "other.yaml"], "unexpected argument other.yaml"),
    (["app", CFG, "--config", CFG, "--random-init"], "two configs"),
    (["predict", "--out", "o"], "no video given: add -i VIDEO"),
])
def test_bad_positionals_are_one_line_errors(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_study_device_sets_train_device_of_every_run(tmp_path):
    from avseg.study.spec import load_spec, run_config

    assert parsed("study", "configs/study/quick.yaml", "--out", "o", "--device", "cpu").device == "cpu"
    for device, wanted in (([], "auto"), (["device=cpu"], "cpu")):  # default: the base config's train.device
        spec = load_spec("configs/study/quick.yaml", device)
        row = spec.rows[0].name
        assert run_config(spec, row, 0, tmp_path / "d", tmp_path / "r", None).train.device == wanted
