"""Fixtures of the reliability tests: a tiny synthetic MS3 set and one trained tiny checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from reliability_helpers import CONFIG, ROOT, SIZE, SMALL

from avseg.config import load_config
from avseg.data.synth import SynthConfig, generate


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """8 MS3-layout clips at 32 px: 6 train, 1 val, 1 test."""
    root = tmp_path_factory.mktemp("reliability_ms3")
    generate("ms3", root, SynthConfig(clips=8, image_size=SIZE, num_classes=4, seed=3, split=(0.75, 0.125, 0.125),
                                      workers=1))
    return root


@pytest.fixture(scope="session")
def trained(data_root, tmp_path_factory) -> Path:
    """last.pt of a 1-step training run (model, optimizer, scheduler, RNG, digests)."""
    from avseg.engine.train import train

    out = tmp_path_factory.mktemp("reliability_run")
    train(load_config(ROOT / CONFIG, [f"data.root={data_root}", f"output_dir={out}", *SMALL, "train.max_steps=1"]))
    return out / "last.pt"


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    """A copy of the trained run's folder (last.pt, config.yaml, log.jsonl) to damage."""
    copy = tmp_path / "run"
    shutil.copytree(trained.parent, copy)
    return copy
