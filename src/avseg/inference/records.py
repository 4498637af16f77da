"""What the predictor hands around and writes: per-frame results, the predictions.json record, mask PNGs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from avseg.data.palette import voc_palette
from avseg.inference.video import DecodedFrame, VideoInfo


@dataclass
class FrameResult:
    """The prediction for one sampled frame.

    Attributes:
        index: position among the sampled frames (0, 1, ...).
        time: the sample time in seconds (0, 1, 2, ... at the default 1 fps).
        frame_index: decode index of the input frame used; frame_time: its timestamp (s).
        class_map: `[H, W]` class ids at the input's size (uint8, or int32 over 256 classes).
        objects: `{"class", "class_id", "score", "box": [x0, y0, x1, y1]}` in input pixels
            (x1, y1 exclusive), best score first.
    """

    index: int
    time: float
    frame_index: int
    frame_time: float
    class_map: np.ndarray
    objects: list[dict] = field(default_factory=list)


@dataclass
class PendingFrame:
    """A sampled frame waiting for the model."""

    time: float
    frame_index: int
    frame_time: float
    image: Tensor  # [3, S, S] normalised
    log_mel: np.ndarray  # [96, 64] (VGGish), or the CAVP front end's [1, 96, 64] / [C, 300, 64]
    wave: np.ndarray | None  # [16000] for the TD separator, else None
    size: tuple[int, int]  # (H, W) of the input


def cut_wave(wave: np.ndarray, start: int, length: int) -> np.ndarray:
    """`wave[start : start + length]`, zero-padded where it falls outside `wave`."""
    out = np.zeros(length, dtype=np.float32)
    lo, hi = max(start, 0), min(start + length, len(wave))
    if hi > lo:
        out[lo - start : hi - start] = wave[lo:hi]
    return out


class FrameTally:
    """Counts decoded frames and remembers where the last one ends (the video's duration)."""

    def __init__(self, fps: float | None = None):
        self.count, self.end = 0, 0.0
        self._gap = 1.0 / fps if fps else 0.0  # the last frame's duration until two frames are seen

    def wrap(self, frames: Iterator[DecodedFrame]) -> Iterator[DecodedFrame]:
        previous = None
        for frame in frames:
            if previous is not None and frame.time > previous:
                self._gap = frame.time - previous
            self.count += 1
            self.end = frame.time + (frame.duration or self._gap)
            previous = frame.time
            yield frame


def expected_samples(info: VideoInfo, rate: float | None) -> int | None:
    """How many frames sampling at `rate` (None: every frame) will give, when the container says."""
    if rate is None:
        if info.frames_hint:
            return info.frames_hint
        return int(round(info.duration_hint * info.fps)) if info.duration_hint and info.fps else None
    return max(1, int(np.ceil(info.duration_hint * rate - 0.5))) if info.duration_hint else None


def save_class_map(class_map: np.ndarray, path: Path) -> None:
    """One class-id PNG: palette-indexed (VOC colours) up to 256 classes, else 16-bit grey."""
    if class_map.dtype == np.uint8:
        image = Image.fromarray(class_map)  # L; putpalette makes it P, same pixel values
        image.putpalette(voc_palette(256).reshape(-1).tolist())
    else:
        image = Image.fromarray(class_map.astype(np.uint16))
    image.save(path)

def video_report(predictor, info: VideoInfo, tally: FrameTally, silent: bool, *, rate, window, overlay, frames) -> dict:
    """The predictions.json content of one video (docs/predict.md)."""
    audio = None
    if info.audio is not None:
        audio = {"sample_rate": info.audio.sample_rate, "channels": info.audio.channels,
                 "codec": info.audio.codec}
    m = predictor.config.model
    return {
        "video": {"path": str(info.path), "width": info.width, "height": info.height,
                  "fps": round(info.fps, 6) if info.fps else None, "duration": round(tally.end, 6),
                  "frames": tally.count, "codec": info.codec, "audio": audio},
        "model": {"checkpoint": predictor.checkpoint, "config": predictor.config_path, "name": m.name,
                  "backbone": m.backbone, "dataset": predictor.config.data.dataset, "classes": predictor.class_names,
                  "image_size": predictor.image_size, "window": window, "random_init": predictor.random_init,
                  "runtime": predictor.runtime, "onnx": predictor.onnx_path,
                  "mask_threshold": predictor.mask_threshold, "score_threshold": predictor.score_threshold},
        "sampling": {"mode": "every_frame" if rate is None else "fps", "fps": rate,
                     "audio": predictor.audio.describe()},
        "silent": silent,
        "overlay": "overlay.mp4" if overlay else None,
        "frames": frames,
    }
