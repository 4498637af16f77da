"""scripts/profile_runtimes.py on a small QSD: both runtimes profiled, one pass each, operators named."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "profile_runtimes.py"


def _script():
    spec = importlib.util.spec_from_file_location("profile_runtimes", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_profiles_one_pass_of_each_runtime_by_operator(tmp_path, capsys, one_thread):
    out = tmp_path / "profile.json"
    assert _script().main(["--row", "qsd", "--backbone", "r18", "--frames", "2", "--image-size", "64",
                           "--top", "4", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    onnx, eager = result["onnx"], result["torch"]
    assert onnx["ops"]["Conv"]["calls"] >= 20 and onnx["ops"]["Conv"]["ms"] > 0  # ResNet-18's convolutions at least
    # one thread, one pass: the kernels fit in that pass's wall time (the warm-up run is not counted)
    assert 0 < sum(op["ms"] for op in onnx["ops"].values()) <= onnx["wall_ms"] * 1.05
    assert any("conv" in name for name in eager["ops"]) and sum(op["ms"] for op in eager["ops"].values()) > 0
    text = capsys.readouterr().out
    assert "qsd / r18, 2 frames at 64 px, 1 thread(s)" in text
    assert text.count("ms wall") == 2 and "  Conv " in text


def test_a_row_without_an_onnx_graph_is_one_line(capsys):
    assert _script().main(["--row", "nonsense"]) == 2
    assert "unknown bench row 'nonsense'" in capsys.readouterr().err
