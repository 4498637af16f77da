"""Test-wide set-up: plug-in modules used by tests are importable by name; the tiny synthetic MS3 set
that the engine and reliability tests share."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "plugins"))


import pytest  # noqa: E402

TINY_SIZE = 32


@pytest.fixture(scope="session")
def ms3_root(tmp_path_factory) -> Path:
    """8 MS3-layout clips at 32 px: 6 train, 1 val, 1 test (one per test process)."""
    from avseg.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth_ms3")
    generate("ms3", root, SynthConfig(clips=8, image_size=TINY_SIZE, num_classes=4, seed=3,
                                      split=(0.75, 0.125, 0.125), workers=1))
    return root
