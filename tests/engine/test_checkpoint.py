"""Checkpoints: atomic writes, weights_only loading, a checkpoint alone rebuilds its model."""

import pytest
import torch

from avseg.config import load_config
from avseg.engine.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from avseg.errors import UserError
from avseg.models.build import build_model

SMALL = ["data.image_size=64", "model.d_model=32", "model.n_heads=4", "model.ffn_dim=64", "model.encoder_layers=1",
         "model.decoder_layers=2", "model.quantizer.codebook_size=16"]


def test_round_trip_rebuilds_the_same_model(tmp_path):
    config = load_config("configs/cpu/qsd_r18_synth_ms3.yaml", SMALL)
    torch.manual_seed(0)
    model = build_model(config).eval()
    path = save_checkpoint(tmp_path / "ckpt.pt", model=model, config=config, step=7, extra={"best": 0.5})
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind
    restored, restored_config, checkpoint = model_from_checkpoint(path)
    assert restored_config == config and checkpoint["step"] == 7 and checkpoint["extra"]["best"] == 0.5
    inputs = (torch.randn(1, 2, 3, 64, 64), torch.randn(1, 2, 96, 64))
    with torch.no_grad():
        assert torch.equal(model(*inputs)["pred_masks"], restored(*inputs)["pred_masks"])


def test_failed_write_keeps_the_previous_checkpoint(tmp_path):
    config = load_config("configs/cpu/qsd_r18_synth_ms3.yaml", SMALL)
    model = build_model(config)
    path = save_checkpoint(tmp_path / "ckpt.pt", model=model, config=config, step=1)
    with pytest.raises(Exception):
        save_checkpoint(path, model=model, config=config, step=2, bad=lambda: None)  # not serialisable
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_bad_files_name_the_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(UserError, match="garbage.pt"):
        load_checkpoint(garbage)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(UserError, match="not an avseg checkpoint"):
        load_checkpoint(other)
