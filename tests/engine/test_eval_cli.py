"""`avseg eval` as a user runs it, and the evaluation engine's helpers, each checked for values.

Written from the evaluation engine's mutation survivors (docs/testing.md section 4): what
metrics.json and per_class.csv hold, what the command prints, which defaults it takes, how it
refuses a checkpoint that does not fit, and the per-clip slicing, voting and resizing helpers.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import warnings

import pytest
import torch

import avseg.engine.evaluate as evaluate_module
from avseg.cli import main
from avseg.config import load_config
from avseg.data.build import class_names
from avseg.data.sample import Batch
from avseg.engine.checkpoint import load_checkpoint, save_checkpoint
from avseg.engine.evaluate import (
    _clip_batch,
    _still_image_vote,
    at_label_size,
    labelled_frames_per_clip,
    main_metric,
    precision_overrides,
    write_results,
)
from avseg.models.build import build_model

CONFIG = "configs/cpu/qsd_r18_synth_ms3.yaml"
SMALL = ["data.image_size=32", "data.num_workers=0", "model.d_model=32", "model.n_heads=4", "model.ffn_dim=64",
         "model.encoder_layers=1", "model.qsd.asd_layers=1", "model.decoder_layers=2",
         "model.quantizer.codebook_size=16", "model.qsd.num_tokens=3"]


@pytest.fixture(scope="module")
def run(ms3_root, tmp_path_factory):
    """A checkpoint of a small untrained QSD (step 7) and the overrides that evaluate it."""
    folder = tmp_path_factory.mktemp("eval_cli")
    overrides = [f"data.root={ms3_root}", f"output_dir={folder / 'out'}", *SMALL]
    config = load_config(CONFIG, overrides)
    torch.manual_seed(0)
    save_checkpoint(folder / "model.pt", model=build_model(config).eval(), config=config, step=7,
                    class_names=class_names(config))
    return {"folder": folder, "overrides": overrides, "checkpoint": folder / "model.pt", "config": config,
            "root": ms3_root}


def _eval(run, *extra):
    return main(["eval", CONFIG, *run["overrides"], "--checkpoint", str(run["checkpoint"]), *extra])


def test_eval_defaults_header_table_and_files(run, capsys, monkeypatch):
    seen = {}
    loader = evaluate_module.evaluation_loader

    def recording_loader(config, split, **kwargs):
        seen["batch_size"], seen["split"] = config.train.eval_batch_size, split
        return loader(config, split, **kwargs)

    monkeypatch.setattr(evaluate_module, "evaluation_loader", recording_loader)
    assert _eval(run, "--batch-size", "3") == 0
    out = capsys.readouterr().out.splitlines()
    assert seen == {"batch_size": 3, "split": "test"}  # no --split: data.test_split
    folder = run["folder"] / "out"  # no --out: output_dir
    text = (folder / "metrics.json").read_text(encoding="utf-8")
    metrics = json.loads(text)
    assert text == json.dumps(metrics, indent=2) + "\n"
    assert {k: metrics[k] for k in ("checkpoint", "step", "dataset", "root", "split")} == {
        "checkpoint": str(run["checkpoint"]), "step": 7, "dataset": "ms3", "root": str(run["root"]), "split": "test"}
    assert metrics["num_clips"] == 1 and metrics["main_metric"] == "j" and metrics["task"] == "binary"
    with open(folder / "per_class.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and rows[0]["class_id"] == "1" and rows[0]["class_name"] == class_names(run["config"])[1]
    for key in ("j", "f", "j_frame_mean", "f_batch_independent"):
        assert float(rows[0][key]) == pytest.approx(metrics[key], abs=1e-6), key
    assert out[0] == f"ms3 test: 1 clips ({run['checkpoint']})"
    assert any(line.startswith("j ") and f"{metrics['j']:.4f}" in line for line in out)
    assert any(line.startswith("num_clips ") for line in out)
    assert out[-1] == f"wrote {folder / 'metrics.json'} and {folder / 'per_class.csv'}"


def test_eval_names_every_skipped_clip_on_one_line(run, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(run["root"], data)
    config = load_config(CONFIG, [f"data.root={data}", *SMALL])
    from avseg.data.build import build_dataset

    clips = build_dataset(config, "train").clips[:2]
    for clip in clips:
        clip.frames[0].write_bytes(b"not a png")
    code = main(["eval", CONFIG, f"data.root={data}", *SMALL, "--checkpoint", str(run["checkpoint"]),
                 "--split", "train", "--out", str(tmp_path / "eval")])
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    names = sorted(clip.clip_id for clip in clips)
    assert f"skipped 2 damaged clip(s): {', '.join(names)}" in out
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["split"] == "train"


def test_eval_refuses_a_checkpoint_of_another_class_count(run, tmp_path, capsys):
    config = load_config(CONFIG, [*run["overrides"], "model.num_classes=3"])
    save_checkpoint(tmp_path / "three.pt", model=build_model(config).eval(), config=config, step=0)
    code = main(["eval", CONFIG, *run["overrides"], "--checkpoint", str(tmp_path / "three.pt")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == (f"avseg eval: error: {tmp_path / 'three.pt'}: the model predicts 3 classes, data set 'ms3' at "
                   f"{run['root']} has 1")


def test_eval_warns_when_the_class_names_differ(run, tmp_path, capsys):
    checkpoint = load_checkpoint(run["checkpoint"])
    checkpoint["class_names"] = ["background", "something else"]
    torch.save(checkpoint, tmp_path / "renamed.pt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["eval", CONFIG, *run["overrides"], "--checkpoint", str(tmp_path / "renamed.pt"),
                     "--out", str(tmp_path / "eval")])
    assert code == 0
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert f"{tmp_path / 'renamed.pt'}: trained with other class names than {run['root']} has" in messages
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as quiet:
        warnings.simplefilter("always")
        assert _eval(run, "--out", str(tmp_path / "same")) == 0
    assert not [w for w in quiet if "class names" in str(w.message)]


def test_eval_compile_hands_the_model_and_device_over(run, tmp_path, monkeypatch):
    import avseg.engine.precision as precision

    calls = []
    monkeypatch.setattr(precision, "compile_model", lambda model, device: calls.append((model, device)) or model)
    assert _eval(run, "--compile", "--out", str(tmp_path / "eval")) == 0
    assert len(calls) == 1 and isinstance(calls[0][0], torch.nn.Module) and calls[0][1] == torch.device("cpu")


def test_eval_shows_no_progress_bar_when_asked_or_not_on_a_terminal(run, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert _eval(run, "--out", str(tmp_path / "a"), "--no-progress") == 0
    assert "eval test" not in capsys.readouterr().err


PLUGIN_ROW_2 = ["model.qsd.separator=tests_plugin_separator:factory", "model.qsd.decomposition=none",
                "model.qsd.recombination=false", "model.qsd.local_calibration=false", "model.qsd.num_sources=2",
                "data.load_waveform=true"]


def test_a_checkpoint_naming_code_runs_only_with_allow_import(run, tmp_path, capsys):
    """Row 2 with a user's separator: refused without --allow-import, even when CONFIG names the
    same code; with it, the code is imported and the checkpoint evaluated."""
    overrides = [*run["overrides"], *PLUGIN_ROW_2]
    config = load_config(CONFIG, overrides)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "plugin.pt", model=build_model(config, allow_import=True).eval(), config=config,
                    step=0, class_names=class_names(config))
    sys.modules.pop("tests_plugin_separator", None)
    command = ["eval", CONFIG, *overrides, "--checkpoint", str(tmp_path / "plugin.pt"), "--out", str(tmp_path / "e")]
    assert main(command) == 2 and "a checkpoint cannot name code: refused" in capsys.readouterr().err
    assert "tests_plugin_separator" not in sys.modules
    assert main([*command, "--allow-import"]) == 0
    assert "tests_plugin_separator" in sys.modules and (tmp_path / "e" / "metrics.json").is_file()


def test_eval_with_no_readable_clip_names_the_split(run, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(run["root"], data)
    from avseg.data.build import build_dataset

    for clip in build_dataset(load_config(CONFIG, [f"data.root={data}", *SMALL]), "test").clips:
        clip.frames[0].write_bytes(b"not a png")
    code = main(["eval", CONFIG, f"data.root={data}", *SMALL, "--checkpoint", str(run["checkpoint"]),
                 "--out", str(tmp_path / "eval")])
    assert code == 2
    assert "no clip of the test split could be evaluated (1 damaged)" in capsys.readouterr().err


# ----------------------------------------------------------------------------- helpers


def test_precision_flags_become_config_overrides():
    args = argparse.Namespace(amp="bf16", compile=True, device="cpu")
    assert precision_overrides(args) == ["train.amp=bf16", "train.compile=true", "train.device=cpu"]
    assert precision_overrides(argparse.Namespace(amp=None, compile=None, device=None)) == []


def test_main_metric_and_labelled_frames(run):
    config = run["config"]
    assert main_metric(config) == "j"
    assert labelled_frames_per_clip(config, "train") == 5  # MS3 labels all five frames
    config.data.dataset = "s4"
    assert labelled_frames_per_clip(config, "train") == 1 and labelled_frames_per_clip(config, "test") == 5
    config.data.dataset = "avss"
    assert main_metric(config) == "miou"
    config.data.dataset = "ms3"


def _batch(clips: int = 3, steps: int = 2) -> Batch:
    frames = torch.arange(clips * steps * 3 * 4 * 4, dtype=torch.float32).view(clips, steps, 3, 4, 4)
    return Batch(frames=frames, log_mel=frames[:, :, 0, :, :2].clone(),
                 semantic=torch.arange(clips * steps * 16).view(clips, steps, 4, 4),
                 frame_present=torch.tensor([[True, False], [True, True], [False, True]])[:clips],
                 label_present=torch.tensor([[True, True], [False, True], [True, False]])[:clips],
                 targets=[f"targets {b}" for b in range(clips)], clip_ids=[f"clip{b}" for b in range(clips)],
                 datasets=["ms3", "avss", "vpo"][:clips], extras={"indices": [10, 11, 12][:clips]})


def test_clip_batch_is_clip_b_and_nothing_else():
    batch = _batch()
    one = _clip_batch(batch, 1)
    for field in ("frames", "log_mel", "semantic", "frame_present", "label_present"):
        assert torch.equal(getattr(one, field), getattr(batch, field)[1:2]), field
    assert (one.targets, one.clip_ids, one.datasets, one.extras) == (["targets 1"], ["clip1"], ["avss"], {"indices": [11]})
    batch.extras.pop("indices")
    assert _clip_batch(batch, 2).extras == {}


def test_longest_side_scoring_gives_each_clip_its_own_rows():
    batch = _batch(clips=2)
    foreground = torch.zeros(4, 4, 4)
    foreground[2:, :2, :3] = 0.9  # clip 1 (rows 2, 3): its image is the top-left 2 x 3 part
    foreground[:2] = 0.7  # clip 0: everything
    batch.extras["native_semantic"] = [torch.zeros(2, 4, 6, dtype=torch.int64), torch.zeros(2, 2, 3, dtype=torch.int64)]
    batch.extras["content_size"] = [(4, 4), (2, 3)]
    ids = torch.arange(4 * 16).view(4, 4, 4)
    yielded = list(at_label_size(batch, {"foreground": foreground, "ids": ids}, binary=True))
    assert [clip.clip_ids for clip, _, _ in yielded] == [["clip0"], ["clip1"]]
    (_, first, labels0), (_, second, labels1) = yielded
    assert first["foreground"].shape == (2, 4, 6) and torch.allclose(first["foreground"], torch.full((2, 4, 6), 0.7))
    assert torch.allclose(second["foreground"], torch.full((2, 2, 3), 0.9)) and second["ids"].eq(1).all()
    assert labels1.shape == (2, 2, 3)
    half = {"foreground": torch.full((4, 4, 4), 0.5), "ids": ids}
    assert all(out["ids"].eq(0).all() for _, out, _ in at_label_size(batch, half, binary=True))  # 0.5 is not > 0.5
    semantic = list(at_label_size(batch, {"foreground": foreground, "ids": ids}, binary=False))
    assert torch.equal(semantic[1][1]["ids"], ids[2:, :2, :3])  # the same size: nearest keeps the ids


def test_still_image_vote():
    one = torch.arange(2 * 3 * 3).view(2, 1, 3, 3)
    assert torch.equal(_still_image_vote(one.view(2, 3, 3), 1), one.view(2, 3, 3))
    copies = torch.tensor([[[1, 2]], [[1, 3]], [[4, 3]],  # image 0: three copies
                           [[5, 5]], [[6, 5]], [[6, 7]]])  # image 1
    assert _still_image_vote(copies, 3).tolist() == [[[1, 3]], [[6, 5]]]
    pairs = torch.tensor([[[2, 2]], [[2, 9]]])  # one image, two copies: agreed pixels keep their id
    assert _still_image_vote(pairs, 2).shape == (1, 1, 2) and int(_still_image_vote(pairs, 2)[0, 0, 0]) == 2


def test_write_results_makes_folders_and_writes_lists(tmp_path):
    out = tmp_path / "a" / "b"
    result = {"j": 0.5, "f": float("nan"), "per_frame": torch.tensor([0.25, 0.75]), "num_clips": 2}
    metrics, table = write_results(out, result, ["background", "sounding"], {"split": "test"})
    assert json.loads(metrics.read_text()) == {"split": "test", "j": 0.5, "f": None, "per_frame": [0.25, 0.75],
                                               "num_clips": 2}
    write_results(out, result, ["background", "sounding"], {"split": "test"})  # the folder exists: fine
    assert table.read_text().splitlines()[0].startswith("class_id,class_name,j")


# ----------------------------------------------------------------------------- TaskMetric


def _clips_batch(semantic, label_present, frame_present=None, dataset="ms3", indices=None) -> Batch:
    clips, steps = semantic.shape[:2]
    extras = {} if indices is None else {"indices": list(indices)}
    return Batch(frames=torch.zeros(clips, steps, 3, 1, 1), log_mel=torch.zeros(clips, steps, 96, 64),
                 semantic=semantic, frame_present=torch.ones(clips, steps, dtype=torch.bool)
                 if frame_present is None else frame_present, label_present=label_present, targets=[],
                 clip_ids=[f"c{i}" for i in range(clips)], datasets=[dataset] * clips, extras=extras)


def _same(first, second, where: str = "result") -> None:
    """Equal nested results (dicts, lists, numbers; NaN equals NaN)."""
    if isinstance(first, dict):
        assert first.keys() == second.keys(), where
        for key in first:
            _same(first[key], second[key], f"{where}.{key}")
    elif isinstance(first, (list, tuple)):
        assert len(first) == len(second), where
        for i, (a, b) in enumerate(zip(first, second)):
            _same(a, b, f"{where}[{i}]")
    else:
        assert first == pytest.approx(second, nan_ok=True), where


def test_binary_metric_groups_clips_by_their_data_set_index_not_their_arrival():
    """Batches arrive out of order (as from DDP shards): F's groups of 4 clips follow the indices."""
    from avseg.engine.evaluate import TaskMetric
    from avseg.metrics import AVSBenchMetric

    generator = torch.Generator().manual_seed(3)
    probability = torch.rand(8, 5, 6, 6, generator=generator)
    truth = torch.rand(8, 5, 6, 6, generator=generator) > 0.6
    labelled = torch.ones(8, 5, dtype=torch.bool)
    metric = TaskMetric("binary", 1, 5)
    for part in ([3, 4, 5], [0, 1, 2], [6, 7]):
        rows = torch.tensor(part)
        metric.update(_clips_batch(truth[rows].long(), labelled[rows], indices=part),
                      {"foreground": probability[rows].flatten(0, 1)})
    reference = AVSBenchMetric(5, clips_per_batch=4, probabilities=True)
    for part in (slice(0, 4), slice(4, 8)):
        reference.update(probability[part].flatten(0, 1), truth[part].flatten(0, 1))
    _same(metric.compute(), reference.compute())
    wrong = TaskMetric("binary", 1, 5)
    with pytest.raises(Exception, match=r"^clips with \[5, 4\] labelled frames; the AVSBench metric expects 5 per clip$"):
        partly = labelled[:2].clone()
        partly[1, 4] = False
        wrong.update(_clips_batch(truth[:2].long(), partly), {"foreground": probability[:2].flatten(0, 1)})


def test_semantic_metric_scores_padded_slots_and_knows_they_are_padding():
    from avseg.engine.evaluate import TaskMetric
    from avseg.metrics import AVSSMetric

    generator = torch.Generator().manual_seed(4)
    semantic = torch.randint(0, 4, (2, 4, 5, 5), generator=generator)
    ids = torch.randint(0, 4, (8, 5, 5), generator=generator)
    frame_present = torch.tensor([[True, True, False, False], [True, True, True, True]])
    semantic[~frame_present] = 0
    label_present = torch.tensor([[True, False, False, False], [True, True, True, False]])
    metric = TaskMetric("semantic", 4, 5)
    metric.update(_clips_batch(semantic, label_present, frame_present, dataset="avss"), {"ids": ids})
    keep = (label_present | ~frame_present).flatten()  # labelled frames and padded slots, as the reference
    reference = AVSSMetric(4)
    reference.update(ids[keep], semantic.flatten(0, 1)[keep], frame_present=frame_present.flatten()[keep])
    _same(metric.compute(), reference.compute())


def test_cavp_metric_on_clips_scores_only_the_labelled_frames():
    from avseg.engine.evaluate import TaskMetric
    from avseg.metrics import CAVPMetric

    generator = torch.Generator().manual_seed(5)
    semantic = torch.randint(0, 3, (2, 3, 5, 5), generator=generator)
    ids = torch.randint(0, 3, (6, 5, 5), generator=generator)
    label_present = torch.tensor([[True, False, True], [False, True, False]])
    metric = TaskMetric("cavp", 3, 5)
    metric.update(_clips_batch(semantic, label_present, dataset="single_plus"), {"ids": ids})
    reference = CAVPMetric(3)
    rows = label_present.flatten()
    reference.update(ids[rows], semantic.flatten(0, 1)[rows])
    _same(metric.compute(), reference.compute())


def test_evaluation_loader_workers_and_batch_size(run):
    from avseg.engine.evaluate import evaluation_loader

    config = load_config(CONFIG, [*run["overrides"], "data.num_workers=2", "train.num_workers=0",
                                  "train.eval_batch_size=3"])
    loader = evaluation_loader(config, "train")
    assert loader.num_workers == 0 and loader.batch_size == 3  # train.* wins when set (>= 0)
    config.train.num_workers, config.train.eval_batch_size = -1, 0
    loader = evaluation_loader(config, "train")
    assert loader.num_workers == 2 and loader.batch_size == config.data.batch_size
    assert [index for batch, _ in evaluation_loader(config, "train") for index in batch.extras["indices"]] == \
        list(range(6))  # in order, every clip once
