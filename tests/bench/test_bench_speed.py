"""`avseg bench speed` at a tiny size: a well-formed table and JSON (no timing thresholds)."""

import json

import pytest
import timm

from avseg.cli import main

TINY = ["--device", "cpu", "--backbones", "r18", "--image-size", "64", "--frames", "2", "--repeats", "1", "--warmup", "0"]
SMALL = ["model.d_model=32", "model.n_heads=4", "model.ffn_dim=64", "model.tpavi.channels=16", "audio.encoder=tiny",
         "model.cavp.audio_network=resnet18", "model.cavp.aspp_channels=32"]
# the backbone row counts a ResNet-18 without its 1000-class head (fc: 512 x 1000 + 1000)
RESNET18_WITHOUT_FC_M = (sum(p.numel() for p in timm.create_model("resnet18").parameters()) - 513_000) / 1e6
KEYS = {"model", "backbone", "device", "frames", "image_size", "ms_per_clip", "clips_per_s", "peak_mem_mb",
        "params_m", "gflops", "runtime", "threads", "max_abs_diff"}


def test_speed_rows_table_and_json(tmp_path, capsys):
    out = tmp_path / "speed.json"
    assert main(["bench", "speed", *TINY, "--rows", "backbone,ablation/4_q_sd,tpavi,cavp", "--no-isolate",
                 "--json", str(out), *SMALL]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["model"] for r in rows] == ["backbone", "ablation/4_q_sd", "tpavi", "cavp"]
    for row in rows:
        assert set(row) == KEYS and row["device"] == "cpu" and row["frames"] == 2 and row["image_size"] == 64
        assert row["ms_per_clip"] > 0 and row["params_m"] > 0 and row["gflops"] > 0 and row["peak_mem_mb"] > 0
    assert rows[0]["params_m"] < rows[1]["params_m"]  # the backbone alone is part of QSD
    assert rows[0]["params_m"] == pytest.approx(RESNET18_WITHOUT_FC_M, abs=0.006)
    table = capsys.readouterr().out
    assert "x backbone" in table and "ablation/4_q_sd" in table and "cavp" in table


def test_cavp_row_is_left_out_for_backbones_that_are_not_resnets():
    from avseg.bench.speed import run_speed

    assert run_speed(["swint"], ["cavp"], isolate=False) == []  # nothing built: DeepLabV3+ needs a ResNet


def test_isolated_row_runs_in_a_subprocess(tmp_path):
    out = tmp_path / "speed.json"
    assert main(["bench", "speed", *TINY, "--rows", "backbone", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["model"] == "backbone" and row["ms_per_clip"] > 0
    assert row["params_m"] == pytest.approx(RESNET18_WITHOUT_FC_M, abs=0.006)


def test_unknown_row_is_a_clear_error(capsys):
    assert main(["bench", "speed", *TINY, "--rows", "nonsense", "--no-isolate"]) == 2
    assert "unknown bench row 'nonsense'" in capsys.readouterr().err


def test_torch_and_onnx_rows_side_by_side(tmp_path, capsys):
    out = tmp_path / "speed.json"
    assert main(["bench", "speed", *TINY, "--rows", "backbone,qsd,ablation/2_td,tpavi", "--runtime", "torch,onnx",
                 "--no-isolate", "--json", str(out), *SMALL]) == 0
    rows = json.loads(out.read_text())["rows"]
    # the backbone and TD rows have no ONNX form: torch only
    assert [(r["model"], r["runtime"]) for r in rows] == [
        ("backbone", "torch"), ("qsd", "torch"), ("qsd", "onnx"), ("ablation/2_td", "torch"),
        ("tpavi", "torch"), ("tpavi", "onnx")]
    for row in rows:
        assert set(row) == KEYS and row["ms_per_clip"] > 0 and row["threads"] >= 1
        assert (row["max_abs_diff"] is None) == (row["runtime"] == "torch")
        if row["runtime"] == "onnx":
            assert 0 <= row["max_abs_diff"] <= 1e-3
    table = capsys.readouterr().out
    assert "x torch" in table and "max diff" in table
    assert main(["bench", "speed", *TINY, "--rows", "qsd", "--runtime", "tensorrt", "--no-isolate"]) == 2
    assert "--runtime tensorrt" in capsys.readouterr().err
