"""Fixtures of the reliability tests: one trained tiny checkpoint (on `ms3_root`, tests/conftest.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from reliability_helpers import CONFIG, ROOT, SMALL

from avseg.config import load_config



@pytest.fixture(scope="session")
def trained(ms3_root, tmp_path_factory) -> Path:
    """last.pt of a 1-step training run (model, optimizer, scheduler, RNG, digests)."""
    from avseg.engine.train import train

    out = tmp_path_factory.mktemp("reliability_run")
    train(load_config(ROOT / CONFIG, [f"data.root={ms3_root}", f"output_dir={out}", *SMALL, "train.max_steps=1"]))
    return out / "last.pt"


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    """A copy of the trained run's folder (last.pt, config.yaml, log.jsonl) to damage."""
    copy = tmp_path / "run"
    shutil.copytree(trained.parent, copy)
    return copy
