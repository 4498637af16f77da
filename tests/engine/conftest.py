"""Shared fixtures of the engine tests: small CPU configs (the tiny MS3 set `ms3_root` is in tests/conftest.py).

Everything runs at 32 px with the CPU configs shrunk further, so that a training step takes about
a second on two CPU cores.
"""

from pathlib import Path

import pytest

from avseg.config import load_config

SIZE = 32
QSD_SMALL = [f"data.image_size={SIZE}", "model.d_model=32", "model.n_heads=4", "model.ffn_dim=64",
             "model.encoder_layers=1", "model.qsd.asd_layers=1", "model.decoder_layers=2", "model.quantizer.codebook_size=16",
             "model.qsd.num_tokens=3"]
TPAVI_SMALL = [f"data.image_size={SIZE}", "model.tpavi.channels=32"]
# fast, quiet training: no workers, no eval unless asked, log every step
TRAIN_FAST = ["data.num_workers=0", "train.log_every=1", "train.eval_every=0", "train.lr_drop_epochs=[]"]



def _factory(path: str, small: list[str]):
    def make(root: Path, out: Path, *overrides: str):
        return load_config(path, [f"data.root={root}", f"output_dir={out}", *small, *TRAIN_FAST, *overrides])

    return make


@pytest.fixture
def qsd_config():
    """qsd_config(root, output_dir, *overrides): the small QSD MS3 config."""
    return _factory("configs/cpu/qsd_r18_synth_ms3.yaml", QSD_SMALL)


@pytest.fixture
def tpavi_config():
    """tpavi_config(root, output_dir, *overrides): the small TPAVI MS3 config."""
    return _factory("configs/cpu/tpavi_r18_synth_ms3.yaml", TPAVI_SMALL)
