"""`avseg bench data` at a tiny size: the loader rows, the training rate and their ratio (no timing
thresholds)."""

import json

import pytest

from avseg.bench.data import TARGET_RATIO, skipped_batches, timed_batches
from avseg.cli import main

AVSS = "configs/cpu/qsd_r18_synth_avss.yaml"
SMALL = ["model.d_model=32", "model.n_heads=4", "model.ffn_dim=64", "model.decoder_layers=1", "data.batch_size=2"]
TINY = ["--device", "cpu", AVSS, "--image-size", "64", "--batches", "1", "--steps", "1", "--warmup", "0", "--no-isolate"]
KEYS = {"layout", "workers", "batch_size", "frames", "image_size", "batches", "warmup_s", "loader_clips_per_s",
        "train_config", "train_device", "train_clips_per_s", "ratio", "meets_target"}


def test_loader_rates_against_the_training_rate(tmp_path, capsys):
    out = tmp_path / "data.json"
    assert main(["bench", "data", *TINY, "--workers", "0,2", "--json", str(out), *SMALL]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["workers"] for r in rows] == [0, 2]
    for row in rows:
        assert set(row) == KEYS
        assert (row["layout"], row["batch_size"], row["frames"], row["image_size"]) == ("avss", 2, 10, 64)
        assert row["loader_clips_per_s"] > 0 and row["train_clips_per_s"] > 0 and row["warmup_s"] > 0
        assert row["ratio"] == pytest.approx(row["loader_clips_per_s"] / row["train_clips_per_s"], rel=1e-2)
        assert row["train_config"] == AVSS and row["train_device"] == "cpu"
    assert rows[0]["train_clips_per_s"] == rows[1]["train_clips_per_s"]  # one training measurement
    assert rows[0]["meets_target"] is None and rows[1]["meets_target"] == (rows[1]["ratio"] >= TARGET_RATIO)
    printed = capsys.readouterr().out
    assert "loader/train" in printed and "target: loader >= 3x the training rate with 2 workers: " in printed
    assert [r["batches"] for r in rows] == [1, 2]  # a multiple of the workers
    assert "wrote 14 synthetic avss clips at 64 px" in printed  # (1 + 2 * 2 prefetched + 2 timed) batches of 2


def test_untimed_and_timed_batches():
    assert [skipped_batches(w) for w in (0, 1, 2)] == [1, 3, 5]
    assert [timed_batches(w, 5) for w in (0, 1, 2, 4)] == [5, 5, 6, 8]


@pytest.mark.parametrize("args, message", [
    (["--layout", "s4"], "--layout s4 but CONFIG configs/cpu/qsd_r18_synth_avss.yaml trains on avss"),
    (["--workers", "a,b"], "--workers a,b: expected comma-separated integers"),
    (["--workers", "-1"], "--workers -1: expected comma-separated integers >= 0"),
    (["--clips", "3"], "--clips 3: --batches 1 with 0 workers needs at least 4 clips (batch size 2)"),
    (["--batches", "0"], "--batches must be >= 1"),
    (["configs/cpu/qsd_r18_synth_s4.yaml"], "unexpected argument configs/cpu/qsd_r18_synth_s4.yaml"),
])
def test_bad_arguments_are_clear_errors(args, message, capsys):
    assert main(["bench", "data", *TINY, "--workers", "0", *args, *SMALL]) == 2
    assert message in capsys.readouterr().err
