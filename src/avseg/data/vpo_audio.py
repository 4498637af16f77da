"""VPO audio as CAVP builds it: VGGSound sources at 16 kHz, 3 s centre crops, mixed (stereo by position)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avseg.audio.cavp_frontend import crop

SAMPLE_RATE = 16_000
CLIP_SAMPLES = 3 * SAMPLE_RATE  # CAVP: audio_len = 3.0 s


def centre_crop(wave: np.ndarray, length: int = CLIP_SAMPLES, short: str = "start") -> np.ndarray:
    """float32 `[n]` -> `[length]`: the centre `length` samples; a shorter clip is tiled, from its
    start (`short="start"`, avseg's VGGish path) or from where the authors' slice starts
    (`short="authors"`: for 1-3 s clips their negative index picks the tail;
    `avseg.audio.cavp_frontend.crop`)."""
    return crop(wave, length, short)


def load_source(path: Path, short: str = "start") -> np.ndarray:
    """A VGGSound source -> float32 `[CLIP_SAMPLES]`: mono, 16 kHz, 3 s centre crop."""
    from avseg.audio import load_audio_mono_16k

    return centre_crop(load_audio_mono_16k(path), short=short)  # AudioError (a UserError) names the file


def mix_sources(sources: list[np.ndarray], positions: list[float] | None = None) -> np.ndarray:
    """Sum equal-length mono sources `[n]` -> float32 `[n, 1]`, or `[n, 2]` with stereo gains
    (left 1 - pos, right pos) when positions are given. Left + right equals the mono mix."""
    gains = np.ones((len(sources), 1), np.float32) if positions is None else \
        np.array([[1.0 - p, p] for p in positions], dtype=np.float32)  # [S, C]
    mix = np.zeros((sources[0].shape[0], gains.shape[1]), dtype=np.float32)
    for source, gain in zip(sources, gains):  # a fixed order of element-wise sums: bit-exact
        mix += source[:, None].astype(np.float32) * gain[None, :]
    return mix
