"""`avseg bench train` at a tiny size: table, JSON keys, projections consistent with the step time
(no timing thresholds)."""

import json
import math

import pytest
import torch

from avseg.bench.train import REAL_TRAIN_CLIPS, bench_config, synthetic_batch
from avseg.cli import main

S4 = "configs/cpu/qsd_r18_synth_s4.yaml"
AVSS = "configs/cpu/qsd_r18_synth_avss.yaml"  # avss_subsets: [v1m, v2]
SMALL = ["model.d_model=32", "model.n_heads=4", "model.ffn_dim=64", "model.decoder_layers=1"]
TINY = ["--device", "cpu", "--image-size", "64", "--batch-size", "1", "--steps", "1", "--warmup", "0"]
KEYS = {"config", "model", "backbone", "dataset", "device", "batch_size", "frames", "labelled_frames", "image_size",
        "amp", "compile", "steps", "ms_per_step", "clips_per_s", "peak_mem_mb", "train_clips", "epochs", "epoch_s",
        "schedule_s", "subsets"}


def _check_projection(row: dict) -> None:
    seconds = row["ms_per_step"] / 1000
    assert row["clips_per_s"] == pytest.approx(row["batch_size"] / seconds, rel=1e-2)
    steps_per_epoch = math.ceil(row["train_clips"] / row["batch_size"])
    assert row["epoch_s"] == pytest.approx(steps_per_epoch * seconds, rel=1e-3, abs=0.1)
    assert row["schedule_s"] == pytest.approx(row["epochs"] * row["epoch_s"], rel=1e-3, abs=0.5)
    assert row["train_clips"] == sum(s["clips"] for s in row["subsets"].values())
    assert sum(s["epoch_s"] for s in row["subsets"].values()) == pytest.approx(row["epoch_s"], rel=1e-2, abs=0.5)


def test_train_row_in_process_with_bf16_autocast_on_the_cpu(tmp_path, capsys):
    out = tmp_path / "train.json"
    assert main(["bench", "train", S4, *TINY, "--amp", "bf16", "--no-isolate", "--json", str(out), *SMALL]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert set(row) == KEYS
    assert (row["dataset"], row["device"], row["frames"], row["labelled_frames"]) == ("s4", "cpu", 5, 1)
    assert (row["image_size"], row["batch_size"], row["steps"]) == (64, 1, 1)
    assert row["amp"] == "bf16" and row["compile"] == "off"  # bf16 autocast runs on the CPU
    assert row["ms_per_step"] > 0 and row["peak_mem_mb"] > 0 and row["epochs"] == 4
    assert row["train_clips"] == REAL_TRAIN_CLIPS["s4"]["s4"]
    _check_projection(row)
    printed = capsys.readouterr().out
    assert "ms/step" in printed and "schedule h" in printed and S4 in printed


def test_avss_row_in_a_subprocess_projects_each_subset(tmp_path, capsys):
    out = tmp_path / "train.json"
    assert main(["bench", "train", AVSS, *TINY, "--json", str(out), *SMALL]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert (row["dataset"], row["frames"], row["labelled_frames"]) == ("avss", 10, 10)
    assert row["subsets"]["v1m"]["clips"] == 296 and row["subsets"]["v2"]["clips"] == 4750
    assert row["subsets"]["v1m"]["frames"] == 5 and row["subsets"]["v2"]["frames"] == 10
    assert "v1s" not in row["subsets"]  # the config reads v1m and v2 only
    assert row["amp"] == "none" and row["compile"] == "off"
    _check_projection(row)


def test_fp16_stays_cuda_only(capsys):
    assert main(["bench", "train", S4, *TINY, "--amp", "fp16", "--no-isolate", *SMALL]) == 2
    assert "fp16 runs on CUDA only" in capsys.readouterr().err


def test_synthetic_batches_have_the_training_shapes():
    generator = torch.Generator().manual_seed(0)
    s4 = synthetic_batch(bench_config(S4, 64, []), 2, generator)
    assert s4.frames.shape == (2, 5, 3, 64, 64) and s4.log_mel.shape == (2, 5, 96, 64)
    assert s4.label_present.tolist() == [[True, False, False, False, False]] * 2
    assert s4.semantic[:, 0].max() == 1 and s4.semantic[:, 1:].max() == 0
    avss = synthetic_batch(bench_config(AVSS, 64, []), 1, generator)
    assert avss.frames.shape[1] == 10 and bool(avss.label_present.all())
    assert 1 <= int(avss.semantic.max()) <= 8  # classes of the config (8)
    assert all(len(t["labels"]) >= 1 for t in avss.targets[0])


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "--steps must be >= 1"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--image-size", "8"], "--image-size must be >= 32"),
    (["configs/none.yaml"], "configs/none.yaml: config file not found"),
    (["--device", "cuda"], "no CUDA device"),
])
def test_bad_arguments_are_clear_errors(args, message, capsys):
    if args == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("a CUDA device is available")
    assert main(["bench", "train", S4, *args, "--no-isolate"] if args[0].startswith("-")
                else ["bench", "train", *args, "--no-isolate"]) == 2
    assert message in capsys.readouterr().err
