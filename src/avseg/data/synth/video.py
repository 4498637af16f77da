"""Synthetic example videos with sound (mp4), made here, never downloaded: for the app, the demo and benchmarks.

The app's bundled examples: on its first start without `--examples`, three clips of the synthetic benchmark
(`avseg.data.synth`) are written as mp4 (H.264 or MPEG-4 video, AAC audio) into a cache folder
and reused afterwards. When the model's class names are those of a synthetic class bank (a model
trained on `avseg synth` data, seed 0), the clips are drawn from that bank, so a trained model
finds its own classes in them.
"""

from __future__ import annotations

import fractions
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import av
import numpy as np
import soxr
from PIL import Image

from avseg.audio.io import mux_audio
from avseg.errors import UserError

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
EXAMPLES_VERSION = 1  # bump when the clips change: a new cache folder is written


@dataclass(frozen=True)
class ExampleSpec:
    name: str
    seconds: int
    multi_source: bool
    seed: int
    size: tuple[int, int]  # (width, height)


EXAMPLES = (
    ExampleSpec("synth-single-source-5s.mp4", 5, False, 11, (224, 224)),
    ExampleSpec("synth-multi-source-5s.mp4", 5, True, 12, (224, 224)),
    ExampleSpec("synth-multi-source-8s-wide.mp4", 8, True, 13, (320, 240)),
)
FPS = 12
AUDIO_RATE = 44100


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "avseg" / "app-examples"


def class_bank_for(class_names: Sequence[str]):
    """(seed, bank): the synthetic bank whose names are the model's foreground classes, else (0, 8 classes)."""
    from avseg.data.synth import build_class_bank
    from avseg.data.synth.classes import MAX_CLASSES

    names = list(class_names)[1:]
    if 2 <= len(names) <= MAX_CLASSES:
        bank = build_class_bank(0, len(names))
        if [c.name for c in bank] == names:
            return 0, bank
    return 0, build_class_bank(0, 8)


def write_synthetic_video(path: str | Path, bank, spec: ExampleSpec) -> Path:
    """One synthetic clip as an mp4: a scene per second (held for FPS frames) and its sound."""
    from avseg.data.synth import SynthConfig, synthesize_clip

    path = Path(path)
    objects = (2, min(4, len(bank)))
    clip = synthesize_clip(SynthConfig(image_size=max(spec.size), objects=objects), bank,
                           np.random.SeedSequence(spec.seed), spec.seconds, spec.multi_source)
    width, height = spec.size
    images = [np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.BILINEAR))
              for f in clip.frames]
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    wave = soxr.resample(clip.waveform.astype(np.float64), 16000, AUDIO_RATE).astype(np.float32)
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream(codec, rate=FPS)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        for index in range(spec.seconds * FPS):
            frame = av.VideoFrame.from_ndarray(images[index // FPS], format="rgb24")
            frame.pts = index
            frame.time_base = fractions.Fraction(1, FPS)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        mux_audio(container, audio, wave[None], AUDIO_RATE, "mono")
    return path


def ensure_examples(class_names: Sequence[str], cache_dir: str | Path | None = None) -> list[Path]:
    """The bundled examples for a model with these classes; written on first use, then reused."""
    seed, bank = class_bank_for(class_names)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / f"v{EXAMPLES_VERSION}-seed{seed}-classes{len(bank)}"
    paths = [folder / spec.name for spec in EXAMPLES]
    if all(p.is_file() and p.stat().st_size > 0 for p in paths):
        return paths
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for spec, path in zip(EXAMPLES, paths):
            if path.is_file() and path.stat().st_size > 0:
                continue
            handle, partial = tempfile.mkstemp(suffix=".mp4", prefix=".partial-", dir=folder)
            os.close(handle)
            try:
                write_synthetic_video(partial, bank, spec)
                os.replace(partial, path)  # atomic: a second app starting at once never sees half a file
            finally:
                Path(partial).unlink(missing_ok=True)
    except OSError as err:
        raise UserError(f"cannot write the example videos to {folder} ({err.strerror or err}); "
                        "give --examples DIR or set XDG_CACHE_HOME") from None
    return paths


def list_examples(folder: str | Path) -> list[Path]:
    """The video files of an `--examples` folder, by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--examples {folder}: not a folder")
    videos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise UserError(f"--examples {folder}: holds no video file ({', '.join(VIDEO_SUFFIXES)})")
    return videos
