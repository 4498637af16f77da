"""Reading videos as streams: frames decoded lazily, sampled in time, audio aligned to each frame.

Nothing here holds a whole video. `iter_frames` decodes the first video stream one frame at a
time; `sample_frames` picks the frame nearest each sample time t = k / rate (or every frame);
`AudioTimeline` decodes the first audio stream lazily, mixes it to mono (or keeps its channels,
for the CAVP front end), resamples it to 16 kHz as it goes (streaming soxr, the same filter as `avseg.audio`) and keeps only the samples from the
latest requested window on. docs/predict.md states the rules.

Time 0 is the timestamp of the first decoded video frame; audio is placed on the same timeline
by its own timestamps (a stream that starts later than the video is preceded by silence).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soxr

from avseg.audio.logmel import RESAMPLER_QUALITY, SAMPLE_RATE
from avseg.errors import UserError

# FFmpeg sample format (without the planar "p") -> (offset, scale to [-1, 1]).
_PCM_SCALE = {
    "u8": (128.0, 1.0 / 128.0),
    "s16": (0.0, 1.0 / 32768.0),
    "s32": (0.0, 1.0 / 2147483648.0),
    "s64": (0.0, 1.0 / 9223372036854775808.0),
    "flt": (0.0, 1.0),
    "dbl": (0.0, 1.0),
}
_FFMPEG_ERRORS = (av.error.FFmpegError, ValueError, UnicodeDecodeError)
_EPS = 1e-6  # seconds: timestamps closer than this are equal


class VideoError(UserError):
    """A video that cannot be used: missing, not a video, empty, or without the audio it needs."""


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    codec: str


@dataclass(frozen=True)
class VideoInfo:
    """What `probe_video` learns before decoding the whole file.

    Attributes:
        width, height: size of the first decoded frame (every frame is converted to it).
        fps: the stream's average frame rate (None when the container does not say).
        origin: timestamp in seconds of the first decoded frame; it becomes time 0.
        duration_hint: the container's or stream's duration (s), for progress only.
        frames_hint: the stream's frame count when the container stores it (else 0).
        audio: the first audio stream, or None.
    """

    path: Path
    width: int
    height: int
    fps: float | None
    rate: Fraction | None
    time_base: Fraction | None
    origin: float
    duration_hint: float | None
    frames_hint: int
    codec: str
    audio: AudioInfo | None


@dataclass
class DecodedFrame:
    """One decoded video frame: `index` in decode order, `time` (s, from time 0), `duration` (s)."""

    index: int
    time: float
    duration: float | None
    frame: av.VideoFrame

    def to_rgb(self, width: int, height: int) -> np.ndarray:
        """uint8 `[height, width, 3]` (frames of another size are scaled to it)."""
        frame = self.frame
        if (frame.width, frame.height) != (width, height):
            frame = frame.reformat(width=width, height=height)
        return frame.to_ndarray(format="rgb24")


def _open(path: Path) -> av.container.InputContainer:
    if not path.exists():
        raise VideoError(f"video {path}: not found")
    if path.is_dir():
        raise VideoError(f"video {path}: is a directory, expected a video file")
    if path.stat().st_size == 0:
        raise VideoError(f"video {path}: is empty (0 bytes)")
    try:
        return av.open(str(path))
    except _FFMPEG_ERRORS as err:
        raise VideoError(f"video {path}: not a readable video (FFmpeg: {err})") from None
    except OSError as err:
        raise VideoError(f"video {path}: cannot be opened ({err})") from None


def _seconds(value, time_base) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def probe_video(path: str | Path) -> VideoInfo:
    """Open `path`, check it has a decodable video stream with frames, and describe it.

    Raises:
        VideoError: missing, a directory, empty, not a video, no video stream, no frames.
    """
    path = Path(path)
    with _open(path) as container:
        if not container.streams.video:
            kinds = f"{len(container.streams.audio)} audio stream(s)" if container.streams.audio else "no streams"
            raise VideoError(f"video {path}: has no video stream ({kinds})")
        stream = container.streams.video[0]
        try:
            first = next(container.decode(stream), None)
        except _FFMPEG_ERRORS as err:
            raise VideoError(f"video {path}: the video stream cannot be decoded (FFmpeg: {err})") from None
        if first is None:
            raise VideoError(f"video {path}: contains no video frames")
        rate = stream.average_rate or stream.guessed_rate
        duration = _seconds(stream.duration, stream.time_base)
        if duration is None and container.duration is not None:
            duration = container.duration / 1_000_000
        audio = None
        if container.streams.audio:
            context = container.streams.audio[0].codec_context
            layout = getattr(context, "layout", None)
            channels = layout.nb_channels if layout is not None else int(getattr(context, "channels", 0) or 0)
            audio = AudioInfo(int(context.sample_rate or 0), channels, context.name)
        return VideoInfo(
            path=path, width=first.width, height=first.height,
            fps=float(rate) if rate else None, rate=Fraction(rate) if rate else None,
            time_base=stream.time_base, origin=first.time or 0.0,
            duration_hint=duration, frames_hint=int(stream.frames or 0),
            codec=stream.codec_context.name, audio=audio,
        )


def iter_frames(info: VideoInfo) -> Iterator[DecodedFrame]:
    """Decode the first video stream of `info.path` lazily; one frame in memory at a time.

    Times are the frames' timestamps minus `info.origin`, made non-decreasing; a frame without a
    timestamp gets the previous one plus one frame interval.
    """
    path = info.path
    step = 1.0 / info.fps if info.fps else None
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        previous: float | None = None
        index = 0
        try:
            for frame in container.decode(stream):
                time = frame.time
                if time is None:
                    time = 0.0 if previous is None else previous + (step or 0.0)
                else:
                    time -= info.origin
                if previous is not None and time < previous:
                    time = previous
                duration = _seconds(getattr(frame, "duration", None) or None, frame.time_base)
                yield DecodedFrame(index, time, duration, frame)
                previous = time
                index += 1
        except _FFMPEG_ERRORS as err:
            raise VideoError(f"video {path}: decoding failed after {index} frames (FFmpeg: {err})") from None


def sample_frames(frames: Iterator[DecodedFrame], rate: float | None) -> Iterator[tuple[float, DecodedFrame]]:
    """Pick frames for the sample times t = 0, 1/rate, 2/rate, ...; `rate=None`: every frame.

    Sample time t takes the frame whose timestamp is nearest to t (the earlier one on a tie),
    and t is sampled while the video still shows a frame there: t < end - dt / 2, where `end`
    is the last frame's timestamp plus its duration dt. So a 5 s video at 30 fps gives
    t = 0..4, not a fifth sample at 5.0. A frame can serve several sample times when `rate`
    exceeds the video's frame rate. Holds one decoded frame (the previous) at a time.

    Yields:
        (t, frame): the sample time in seconds and the frame chosen for it.
    """
    if rate is not None and rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    previous: DecodedFrame | None = None
    gap: float | None = None
    k = 0
    for current in frames:
        if rate is None:
            yield current.time, current
        else:
            while k / rate <= current.time + _EPS:
                target = k / rate
                if previous is not None and target - previous.time <= current.time - target + _EPS:
                    yield target, previous
                else:
                    yield target, current
                k += 1
        if previous is not None and current.time > previous.time:
            gap = current.time - previous.time
        previous = current
    if previous is None or rate is None:
        return
    last_duration = previous.duration or gap or 0.0
    end = previous.time + last_duration
    while k / rate < end - last_duration / 2 - _EPS:
        yield k / rate, previous
        k += 1


def audio_to_float(frame: av.AudioFrame) -> np.ndarray:
    """One decoded audio frame -> float32 `[samples, channels]` in [-1, 1] (VGGish's scaling)."""
    name = frame.format.name.removesuffix("p")
    if name not in _PCM_SCALE:
        raise ValueError(f"unsupported sample format {frame.format.name}")
    offset, scale = _PCM_SCALE[name]
    raw = frame.to_ndarray()  # planar [channels, samples]; packed [1, samples * channels]
    channels = frame.layout.nb_channels
    raw = raw.T if frame.format.is_planar else raw.reshape(-1, channels)
    return ((raw.astype(np.float64) - offset) * scale).astype(np.float32)


class AudioTimeline:
    """The first audio stream of a file as 16 kHz mono float32, decoded lazily on the video timeline.

    `window(start, length)` returns `length` samples from time `start` (silence where the track
    has none); requests must come with non-decreasing `start`, and samples before the latest
    `start` are forgotten, so memory stays at about one window plus one decoded audio frame
    whatever the video's length. Channels are averaged, then each chunk goes through a streaming
    soxr resampler (quality "HQ", as `avseg.audio.to_mono_16k`; identical output to a one-shot
    resample of the whole track). With `keep_channels` the channels are resampled each on its own
    (as `avseg.audio.cavp_frontend.channels_16k`) and windows are `[C, length]`.
    """

    def __init__(self, info: VideoInfo, keep_channels: bool = False):
        if info.audio is None:
            raise VideoError(f"video {info.path}: has no audio track")
        self.info = info
        self._container = _open(info.path)
        stream = self._container.streams.audio[0]
        self._frames = self._container.decode(stream)
        self._resampler: soxr.ResampleStream | None = None
        self._rate: int | None = None
        self.keep_channels = keep_channels
        self._channels: int | None = None  # with keep_channels: the track's, from its first frame
        self._buffer = np.zeros(0, dtype=np.float32)
        self._start = 0  # 16 kHz sample index of self._buffer[0] on the timeline
        self._placed = False
        self._eof = False
        self.samples_decoded = 0

    @property
    def _end(self) -> int:
        return self._start + len(self._buffer)

    def _append(self, chunk: np.ndarray) -> None:
        if chunk.size:
            self._buffer = np.concatenate([self._buffer, chunk.astype(np.float32, copy=False)])

    def _flush_resampler(self) -> None:
        if self._resampler is not None:
            empty = np.zeros((0, self._channels) if self.keep_channels else 0, dtype=np.float32)
            self._append(self._resampler.resample_chunk(empty, last=True))
            self._resampler = None

    def _pull(self) -> None:
        try:
            frame = next(self._frames, None)
        except _FFMPEG_ERRORS as err:
            raise VideoError(f"video {self.info.path}: decoding the audio track failed (FFmpeg: {err})") from None
        if frame is None:
            self._flush_resampler()
            self._eof = True
            return
        mono = audio_to_float(frame)
        if self.keep_channels:
            if self._channels is None:
                self._channels = mono.shape[1]
                self._buffer = np.zeros((0, self._channels), dtype=np.float32)
            elif mono.shape[1] != self._channels:
                raise VideoError(f"video {self.info.path}: the audio track changes from {self._channels} "
                                 f"to {mono.shape[1]} channels")
        else:
            mono = mono.mean(axis=1)
        self.samples_decoded += len(mono)
        rate = int(frame.sample_rate)
        if not self._placed:
            offset = (frame.time - self.info.origin) if frame.time is not None else 0.0
            self._start = int(round(offset * SAMPLE_RATE))
            self._placed = True
        if rate != self._rate:  # first frame, or the rate changes inside the stream
            self._flush_resampler()
            self._rate = rate
            if rate != SAMPLE_RATE:
                self._resampler = soxr.ResampleStream(rate, SAMPLE_RATE, self._channels or 1, dtype="float32",
                                                      quality=RESAMPLER_QUALITY)
        if self._resampler is None:
            self._append(mono)
        else:
            self._append(self._resampler.resample_chunk(mono, last=False))

    def window(self, start: float, length: int, trim_end: bool = False) -> np.ndarray:
        """float32 `[length]` (`[C, length]` with keep_channels): the 16 kHz samples from `start`
        seconds on (zeros outside the track). `trim_end`: a window reaching past the end of the
        track stops there (fewer samples, none when it starts after the end)."""
        first = int(round(start * SAMPLE_RATE))
        last = first + length
        while self._end < last and not self._eof:
            self._pull()
        if trim_end and self._eof and self._end < last:
            last = max(self._end, first)
        out = np.zeros((last - first, *self._buffer.shape[1:]), dtype=np.float32)
        lo, hi = max(first, self._start), min(last, self._end)
        if hi > lo:
            out[lo - first : hi - first] = self._buffer[lo - self._start : hi - self._start]
        drop = min(max(first - self._start, 0), len(self._buffer))
        if drop:
            self._buffer = self._buffer[drop:].copy()
            self._start += drop
        if self.keep_channels:
            return np.ascontiguousarray(out.T if out.ndim == 2 else out[None])
        return out

    def close(self) -> None:
        self._frames = iter(())
        self._container.close()

    def __enter__(self) -> AudioTimeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SilentTimeline:
    """Stands in for `AudioTimeline` when a video has no audio and silence is allowed."""

    samples_decoded = 0

    def window(self, start: float, length: int, trim_end: bool = False) -> np.ndarray:
        return np.zeros(length, dtype=np.float32)

    def close(self) -> None:
        pass

    def __enter__(self) -> SilentTimeline:
        return self

    def __exit__(self, *exc) -> None:
        pass
