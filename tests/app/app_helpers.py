"""Helpers for the `avseg app` tests: paths, synthetic videos with sound, free ports."""

from __future__ import annotations

import socket
from pathlib import Path

from avseg.data.synth.video import ExampleSpec, class_bank_for, write_synthetic_video

ROOT = Path(__file__).resolve().parents[2]
QSD_CONFIG = ROOT / "configs/cpu/qsd_r18_synth_avss.yaml"
SMALL = ["data.image_size=64"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_video(path: Path, seconds: int = 3, size: tuple[int, int] = (160, 120), seed: int = 5,
               class_names=("background", *[f"class {i}" for i in range(1, 9)])) -> Path:
    """A synthetic mp4 (H.264 or MPEG-4 + AAC) of `seconds` scenes and their sounds."""
    _, bank = class_bank_for(class_names)
    return write_synthetic_video(path, bank, ExampleSpec(path.name, seconds, True, seed, size))
