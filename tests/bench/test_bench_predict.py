"""`avseg bench predict` on short videos: one real run in a subprocess, the peak-ratio bookkeeping
with a stand-in for the subprocess, and the argument errors (no timing thresholds)."""

import json

import pytest

from avseg.bench import predict as bench_predict
from avseg.cli import main

CONFIG = "configs/cpu/qsd_r18_synth_avss.yaml"
TINY = ["--device", "cpu", CONFIG, "--random-init", "--video-size", "64x48", "data.image_size=64", "model.d_model=32",
        "model.n_heads=4", "model.ffn_dim=64"]
KEYS = {"mode", "seconds", "video_s", "video_fps", "frames", "load_s", "process_s", "wall_s", "rtf", "peak_rss_mb",
        "peak_ratio", "device", "model", "overlay"}


def test_dense_run_in_a_subprocess(tmp_path, capsys):
    out = tmp_path / "predict.json"
    assert main(["bench", "predict", "--seconds", "1", "--modes", "dense", "--no-overlay", *TINY,
                 "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert set(row) == KEYS
    assert (row["mode"], row["seconds"], row["device"], row["model"], row["overlay"]) == ("dense", 1, "cpu", CONFIG,
                                                                                           False)
    assert row["video_s"] == pytest.approx(1.0, abs=0.1) and row["video_fps"] == pytest.approx(12)
    assert row["frames"] == round(row["video_s"] * row["video_fps"])  # every frame
    assert row["process_s"] > 0 and row["load_s"] > 0 and row["wall_s"] > row["load_s"] + row["process_s"]
    assert row["rtf"] == pytest.approx(row["process_s"] / row["video_s"], rel=2e-3, abs=1e-3)  # both rounded in the JSON
    assert row["peak_rss_mb"] > 100 and row["peak_ratio"] == 1.0
    printed = capsys.readouterr().out
    assert "RTF" in printed and "(random init)" in printed and "peak(" not in printed  # one length: no ratio


def test_peak_ratio_per_mode_against_the_shortest_video(monkeypatch, capsys, tmp_path):
    calls = []

    def fake(video, out, **kwargs):  # stands in for the subprocess: peak grows with the length
        seconds = int(video.stem.split("-")[1][:-1])
        calls.append((seconds, kwargs["mode"]))
        fps = {"1fps": 1, "dense": 12}[kwargs["mode"]]
        return {"load_s": 1.0, "process_s": 0.5 * seconds, "frames": seconds * fps, "video_s": float(seconds),
                "video_fps": 12.0, "peak_rss_mb": 1000.0 + 10 * seconds * fps, "device": "cpu", "wall_s": 9.0}

    monkeypatch.setattr(bench_predict, "predict_isolated", fake)
    out = tmp_path / "predict.json"
    assert main(["bench", "predict", "--seconds", "2,1", "--modes", "1fps,dense", *TINY, "--json", str(out)]) == 0
    assert calls == [(1, "1fps"), (1, "dense"), (2, "1fps"), (2, "dense")]  # shortest first
    rows = {(r["seconds"], r["mode"]): r for r in json.loads(out.read_text())["rows"]}
    assert rows[(2, "1fps")]["peak_ratio"] == pytest.approx(1020 / 1010, rel=1e-3)
    assert rows[(2, "dense")]["peak_ratio"] == pytest.approx(1240 / 1120, rel=1e-3)
    assert rows[(1, "dense")]["peak_ratio"] == 1.0 and rows[(2, "dense")]["rtf"] == 0.5
    printed = capsys.readouterr().out
    assert f"peak(2 s) / peak(1 s): 1fps {1020 / 1010:.3f}, dense {1240 / 1120:.3f} (target <= 1.2)" in printed


@pytest.mark.parametrize("args, message", [
    (["--modes", "fast"], "--modes: unknown mode 'fast'"),
    (["--seconds", "0"], "--seconds 0: expected comma-separated integers >= 1"),
    (["--video-size", "33x33"], "--video-size 33x33: width and height must be even"),
    ([CONFIG], "builds an untrained model: add --random-init"),
    (["--checkpoint", "missing.pt"], "--checkpoint missing.pt: not found"),
    (["--checkpoint", "missing.pt", CONFIG, "--random-init"], "give either --checkpoint"),
])
def test_bad_arguments_are_clear_errors(args, message, capsys):
    assert main(["bench", "predict", "--seconds", "1", *args]) == 2
    assert message in capsys.readouterr().err
