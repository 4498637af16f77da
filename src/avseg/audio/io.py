"""Reading audio from sound files and video containers; writing 16-bit wav.

``load_audio`` reads plain sound files (wav, flac, ogg, aiff, ...: chosen by extension) with
soundfile (libsndfile) and everything else, or what libsndfile refuses, with PyAV (FFmpeg: mp4,
mkv, webm, m4a, mp3, ...), decoding every frame of the first audio stream. Samples come back as float32 ``[samples, channels]`` at the file's own rate; integer
PCM is scaled the VGGish way (int16 / 32768).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from avseg.errors import UserError

from .logmel import to_mono_16k

# FFmpeg sample format (without the planar "p") -> (numpy dtype, offset, scale to [-1, 1]).
_PCM_FORMATS = {
    "u8": (np.uint8, 128.0, 1.0 / 128.0),
    "s16": (np.int16, 0.0, 1.0 / 32768.0),
    "s32": (np.int32, 0.0, 1.0 / 2147483648.0),
    "s64": (np.int64, 0.0, 1.0 / 9223372036854775808.0),
    "flt": (np.float32, 0.0, 1.0),
    "dbl": (np.float64, 0.0, 1.0),
}


# Extensions read with soundfile first; every other file goes straight to PyAV.
_SOUNDFILE_EXTENSIONS = {".wav", ".wave", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".au",
                         ".w64", ".rf64", ".caf"}


class AudioError(UserError):
    """An audio file that cannot be used: missing, undecodable, empty or without audio."""


def _check_exists(path: Path) -> None:
    if path.is_dir():
        raise AudioError(f"audio file {path}: is a directory, expected a sound or video file")
    if not path.exists():
        raise AudioError(f"audio file {path}: not found")


def _read_soundfile(path: Path) -> tuple[np.ndarray, int] | None:
    """float32 ``[samples, channels]`` and rate, or None when libsndfile cannot read it."""
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        return None
    return samples, int(rate)


def _frame_to_float(frame: av.AudioFrame) -> np.ndarray:
    """One decoded audio frame -> float32 ``[samples, channels]``."""
    name = frame.format.name.removesuffix("p")
    if name not in _PCM_FORMATS:
        raise ValueError(f"unsupported sample format {frame.format.name}")
    _, offset, scale = _PCM_FORMATS[name]
    raw = frame.to_ndarray()  # planar [channels, samples]; packed [1, samples * channels]
    channels = frame.layout.nb_channels
    if frame.format.is_planar:
        raw = raw.T
    else:
        raw = raw.reshape(-1, channels)
    return ((raw.astype(np.float64) - offset) * scale).astype(np.float32)


def _decode_stream(path: Path, container: av.container.InputContainer) -> tuple[np.ndarray, int]:
    stream = container.streams.audio[0]
    chunks: list[np.ndarray] = []
    rate = channels = None
    for frame in container.decode(stream):
        chunk = _frame_to_float(frame)
        if rate is None:
            rate, channels = int(frame.sample_rate), chunk.shape[1]
        elif (int(frame.sample_rate), chunk.shape[1]) != (rate, channels):
            raise AudioError(
                f"audio file {path}: the sample rate or channel count changes inside the "
                f"stream ({rate} Hz x {channels} -> {frame.sample_rate} Hz x {chunk.shape[1]}); "
                "convert it to a plain wav first"
            )
        chunks.append(chunk)
    if not chunks:
        raise AudioError(f"audio file {path}: the audio stream holds no samples")
    return np.concatenate(chunks, axis=0), rate


def _read_pyav(path: Path) -> tuple[np.ndarray, int]:
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, ValueError, UnicodeDecodeError) as exc:
        raise AudioError(
            f"audio file {path}: could not be decoded (not a sound or video format that "
            f"soundfile or FFmpeg reads, or the file is damaged: {exc})"
        ) from exc
    with container:
        if not container.streams.audio:
            raise AudioError(
                f"audio file {path}: the container has no audio stream "
                f"({len(container.streams.video)} video stream(s))"
            )
        try:
            return _decode_stream(path, container)
        except (av.error.FFmpegError, ValueError) as exc:
            raise AudioError(
                f"audio file {path}: decoding the audio stream failed ({exc})"
            ) from exc


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a sound or video file.

    Args:
        path: wav / flac / ogg / ... (soundfile) or any container FFmpeg reads (mp4, mkv,
            webm, mp3, m4a, ...); for containers the first audio stream is used.

    Returns:
        (float32 ``[samples, channels]`` in [-1, 1] for PCM, sample rate in Hz).

    Raises:
        AudioError: missing file, undecodable file, no audio stream, or zero samples.
    """
    path = Path(path)
    _check_exists(path)
    result = _read_soundfile(path) if path.suffix.lower() in _SOUNDFILE_EXTENSIONS else None
    samples, rate = result if result is not None else _read_pyav(path)
    if samples.shape[0] == 0 or samples.shape[1] == 0:
        raise AudioError(f"audio file {path}: contains no audio samples (empty or header only)")
    return np.ascontiguousarray(samples, dtype=np.float32), rate


def load_audio_mono_16k(path: str | Path) -> np.ndarray:
    """Decode ``path``, average its channels, resample to 16 kHz: float32 ``[samples]``."""
    samples, rate = load_audio(path)
    return to_mono_16k(samples, rate).astype(np.float32)


def write_wav(path: str | Path, waveform: np.ndarray, sample_rate: int) -> None:
    """Write 16-bit PCM wav; parent folders are created.

    Args:
        path: destination file.
        waveform: ``[samples]`` or ``[samples, channels]``; float in [-1, 1] (clipped, then
            multiplied by 32768 and rounded, so reading back with ``load_audio`` inverts it
            up to rounding) or int16 (written as it is).
        sample_rate: rate in Hz.
    """
    path = Path(path)
    waveform = np.asarray(waveform)
    if waveform.ndim not in (1, 2):
        raise ValueError(f"{path}: waveform must be [samples] or [samples, channels]; "
                         f"got shape {waveform.shape}")
    if waveform.dtype != np.int16:
        floats = waveform.astype(np.float64)
        if not np.all(np.isfinite(floats)):
            raise ValueError(f"{path}: waveform contains NaN or infinite values")
        scaled = np.round(np.clip(floats, -1.0, 1.0) * 32768.0)
        waveform = np.clip(scaled, -32768, 32767).astype(np.int16)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), waveform, int(sample_rate), subtype="PCM_16", format="WAV")
    except (OSError, sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"audio file {path}: could not be written ({exc})") from exc


def mux_audio(container: av.container.OutputContainer, stream: av.AudioStream, samples: np.ndarray,
              sample_rate: int, layout: str, chunk: int = 1024) -> None:
    """Encode planar float audio `[channels, n]` into `stream` in `chunk`-sample frames, then flush it."""
    samples = np.asarray(samples, dtype=np.float32)
    for start in range(0, samples.shape[1], chunk):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start : start + chunk]),
                                           format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        frame.pts = start
        frame.time_base = Fraction(1, sample_rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
