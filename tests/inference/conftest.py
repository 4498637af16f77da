"""Fixtures for `avseg predict`: small videos written with PyAV from synthetic clips, a tiny model."""

from __future__ import annotations

import fractions
import math
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import soxr
from PIL import Image

from avseg.data.synth import SynthConfig, build_class_bank, synthesize_clip
from avseg.audio.io import mux_audio

from tests.inference.recording import ROOT, SMALL, TPAVI_CONFIG  # noqa: F401 (shared with the value tests)

QSD_CONFIG = ROOT / "configs/cpu/qsd_r18_synth_avss.yaml"
VIDEO_CODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _layout(channels: int) -> str:
    return "mono" if channels == 1 else "stereo"


def write_video(path: Path, *, fps=fractions.Fraction(30), size=(96, 64), seconds: float = 2.0,
                audio_rate: int | None = 16000, channels: int = 1, frame_times=None, seed: int = 0,
                tone: tuple[float, float] | None = None, codec: str = VIDEO_CODEC) -> Path:
    """A video of synthetic scenes (one scene per second) and their sounds.

    fps: a Fraction (30000/1001 for 29.97) used for `round(seconds * fps)` frames at k / fps,
        unless `frame_times` (seconds, increasing) gives the timestamps: variable frame rate.
    audio_rate: None writes no audio track. tone: (start, end) seconds: the audio is silence
        except a loud 1 kHz tone in that interval (for alignment checks).
    """
    width, height = size
    fps = fractions.Fraction(fps).limit_denominator(100000)
    if frame_times is None:
        count = int(round(seconds * fps))
        frame_times = [k / fps for k in range(count)]
        time_base = 1 / fps
    else:
        time_base = fractions.Fraction(1, 1000)
    frame_times = [fractions.Fraction(t).limit_denominator(1000) if time_base.denominator == 1000 else t
                   for t in frame_times]
    scenes = max(1, math.ceil(float(frame_times[-1]) + 1e-9), math.ceil(seconds))
    clip = synthesize_clip(SynthConfig(image_size=64), build_class_bank(1, 8), seed, scenes, multi_source=True)
    images = [np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.BILINEAR)) for f in clip.frames]
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.time_base = time_base
        video.time_base = time_base
        audio = None
        if audio_rate:
            audio = container.add_stream("aac", rate=audio_rate, layout=_layout(channels))
        for t in frame_times:
            frame = av.VideoFrame.from_ndarray(images[min(int(t), len(images) - 1)], format="rgb24")
            frame.pts = int(round(t / time_base))
            frame.time_base = time_base
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio is not None:
            wave = clip.waveform[: int(seconds * 16000)].astype(np.float64)
            if tone is not None:
                t = np.arange(int(seconds * 16000)) / 16000
                wave = np.where((t >= tone[0]) & (t < tone[1]), 0.8 * np.sin(2 * np.pi * 1000 * t), 0.0)
            if audio_rate != 16000:
                wave = soxr.resample(wave, 16000, audio_rate)
            samples = np.stack([wave * (0.5 + 0.5 * c) for c in range(channels)]).astype(np.float32)
            mux_audio(container, audio, samples, audio_rate, _layout(channels))
    return path


def describe(path: Path) -> dict:
    """What a written file holds: size, decoded frame count, durations, audio stream."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = [frame.time for frame in container.decode(stream)]
        audio = container.streams.audio[0] if container.streams.audio else None
        return {
            "width": stream.codec_context.width, "height": stream.codec_context.height, "frames": len(times),
            "video_end": times[-1] + (times[-1] - times[-2] if len(times) > 1 else 0.0),
            "rate": stream.average_rate,
            "audio": None if audio is None else (audio.codec_context.sample_rate, audio.codec_context.layout.nb_channels),
            "duration": container.duration / 1e6 if container.duration else None,
        }


@pytest.fixture(scope="session")
def make_video():
    return write_video


@pytest.fixture(scope="session")
def video_info():
    return describe


@pytest.fixture(scope="session")
def cli_model():
    """CLI arguments for the tiny untrained QSD model at 64 px."""
    return [str(QSD_CONFIG), "--device", "cpu", "--no-progress", "--random-init", *SMALL]


@pytest.fixture(scope="session")
def predictor():
    from avseg import Predictor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Predictor.from_config(QSD_CONFIG, SMALL, device="cpu")


@pytest.fixture(scope="session")
def tpavi_checkpoint(tmp_path_factory):
    """A TPAVI S4 checkpoint (random weights) with the class names the trainer stores."""
    import torch

    from avseg.config import load_config
    from avseg.engine.checkpoint import save_checkpoint
    from avseg.models.build import build_model

    config = load_config(TPAVI_CONFIG, [*SMALL, "model.backbone_weights=", "audio.vggish_weights="])
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(config)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tpavi.pt", model=model, config=config,
                           class_names=["background", "sounding"])
