"""Checkpoints name no code, carry digests of their tensors, and every bad one is one line (CLI)."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
from reliability_helpers import CONFIG, SMALL, assert_one_line_error, avseg

from avseg.engine.checkpoint import load_checkpoint, tensor_digests
from avseg.errors import UserError


def _eval(checkpoint, ms3_root, tmp_path, *extra):
    return avseg("eval", CONFIG, f"data.root={ms3_root}", "data.num_workers=0", "data.image_size=32",
                 f"output_dir={tmp_path / 'eval'}", "--checkpoint", str(checkpoint), *extra)


def _damage(path, tensor: torch.Tensor, fill: bytes) -> None:
    """Overwrite up to 4 KB of `tensor`'s bytes inside the checkpoint file `path` with `fill`."""
    raw = path.read_bytes()
    data = tensor.detach().contiguous().view(torch.uint8).numpy().tobytes()
    start = raw.find(data[:256])
    assert start >= 0 and raw.find(data[:256], start + 1) < 0  # found once
    size = min(4096, len(data))
    path.write_bytes(raw[:start] + (fill * size)[:size] + raw[start + size:])


def test_checkpoint_naming_a_function_imports_and_calls_nothing(run_copy, ms3_root, tmp_path):
    for name in ("os:_exit", "time:sleep"):
        checkpoint = load_checkpoint(run_copy / "last.pt")
        checkpoint["config"]["model"]["qsd"]["separator"] = name
        evil = tmp_path / f"evil_{name.replace(':', '_')}.pt"
        torch.save(checkpoint, evil)  # passes torch.load(weights_only=True)
        line = assert_one_line_error(_eval(evil, ms3_root, tmp_path), "eval", str(evil), name, "cannot name code")
        assert "refused" in line
    sys.modules.pop("tests_plugin_separator", None)
    checkpoint["config"]["model"]["qsd"]["separator"] = "tests_plugin_separator:factory"
    from avseg.engine.checkpoint import checked_config

    with pytest.raises(UserError, match="cannot name code"):
        checked_config("x.pt", checkpoint["config"])
    assert "tests_plugin_separator" not in sys.modules


def test_empty_and_truncated_checkpoints_are_one_line(run_copy, ms3_root, tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert_one_line_error(_eval(empty, ms3_root, tmp_path), "eval", str(empty), "empty file")
    cut = tmp_path / "cut.pt"
    cut.write_bytes((run_copy / "last.pt").read_bytes()[:100_000])
    assert_one_line_error(_eval(cut, ms3_root, tmp_path), "eval", str(cut), "not a readable avseg checkpoint")


def test_damaged_weights_are_named_on_load(run_copy, ms3_root, tmp_path):
    path = run_copy / "last.pt"
    weights = load_checkpoint(path)["model"]
    name = "backbone.body.layer3.0.conv1.weight" if "backbone.body.layer3.0.conv1.weight" in weights else max(
        weights, key=lambda k: weights[k].numel())
    _damage(path, weights[name], b"\xff")
    line = assert_one_line_error(_eval(path, ms3_root, tmp_path), "eval", str(path), f"'model.{name}'", "damaged")
    assert "SHA-256" in line


def test_damaged_optimizer_state_stops_the_resume(run_copy, ms3_root, tmp_path):
    path = run_copy / "last.pt"
    state = load_checkpoint(path)["optimizer"]["state"]
    index, key = next((i, k) for i, s in state.items() for k, v in s.items() if k == "exp_avg" and v.numel() >= 1024)
    _damage(path, state[index][key], b"\x00\x00\x80\x3f")  # 1.0f: finite, so only the digest can tell
    result = avseg("train", CONFIG, f"data.root={ms3_root}", f"output_dir={run_copy}", *SMALL, "train.max_steps=2",
                   "--resume", "auto")
    assert_one_line_error(result, "train", str(path), f"'optimizer.state.{index}.{key}'", "damaged")


def test_non_finite_weight_is_named_even_without_a_digest(run_copy, tmp_path):
    checkpoint = load_checkpoint(run_copy / "last.pt")
    del checkpoint["digests"]
    name = next(k for k, v in checkpoint["model"].items() if v.is_floating_point() and v.numel() > 1)
    checkpoint["model"][name][0] = float("inf")
    old = tmp_path / "old.pt"
    torch.save(checkpoint, old)
    with pytest.warns(UserWarning, match="without tensor digests"), pytest.raises(UserError, match=f"'model.{name}'"):
        load_checkpoint(old)
    checkpoint["model"][name][0] = 0.0
    torch.save(checkpoint, old)
    with pytest.warns(UserWarning, match="cannot be verified"):
        assert load_checkpoint(old)["step"] == 1  # an old, digest-less checkpoint still loads


def test_digests_cover_every_tensor_and_change_with_one_value(run_copy):
    checkpoint = load_checkpoint(run_copy / "last.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checkpoint written now carries digests: no warning
        load_checkpoint(run_copy / "last.pt")
    assert set(checkpoint["digests"]["model"]) == set(checkpoint["model"])
    assert len(checkpoint["digests"]["optimizer"]) > len(checkpoint["model"]) // 2
    state = checkpoint["model"]
    name = next(iter(state))
    before = tensor_digests({name: state[name]})[name]
    state[name].view(-1)[0] += 1
    assert tensor_digests({name: state[name]})[name] != before
