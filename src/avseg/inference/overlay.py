"""`overlay.mp4`: every input frame, coloured by the latest prediction, with the input's audio.

`OverlayWriter` decodes the input video a second time, in step with the predictions: a mask
for decoded frame i is pushed as soon as the model has produced it, and every input frame before
i is written coloured by the previous mask. So the writer holds one decoded frame and one class
map, never a queue of frames, whatever the video's length. The audio track is decoded lazily
too, re-encoded to AAC and interleaved with the video as it is written.
"""

from __future__ import annotations

import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from avseg.inference.video import DecodedFrame, VideoError, VideoInfo, iter_frames

ALPHA = 0.5  # weight of the class colour over the frame
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def render_label_box(lines: list[tuple[str, tuple[int, int, int] | None]], size: int,
                     text_colour=(255, 255, 255)) -> tuple[np.ndarray, np.ndarray]:
    """A box of text lines, each after an optional colour swatch: (uint8 rgb [h, w, 3], alpha [h, w])."""
    font = _font(size)
    pad, swatch = max(2, size // 4), size
    widths = []
    for text, colour in lines:
        left, top, right, bottom = font.getbbox(text)
        widths.append(right + (swatch + pad if colour is not None else 0))
    line_height = size + pad
    width, height = max(widths) + 2 * pad, line_height * len(lines) + pad
    image = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    for row, (text, colour) in enumerate(lines):
        y, x = pad + row * line_height, pad
        if colour is not None:
            draw.rectangle([x, y, x + swatch - 1, y + swatch - 1], fill=tuple(int(c) for c in colour),
                           outline=(255, 255, 255))
            x += swatch + pad
        draw.text((x, y), text, fill=text_colour, font=font)
    return np.asarray(image), np.full((height, width), 0.7, dtype=np.float32)


def _paste(rgb: np.ndarray, box: tuple[np.ndarray, np.ndarray], top: int, left: int) -> None:
    patch, alpha = box
    height = min(patch.shape[0], rgb.shape[0] - top)
    width = min(patch.shape[1], rgb.shape[1] - left)
    if height <= 0 or width <= 0:
        return
    region = rgb[top : top + height, left : left + width].astype(np.float32)
    a = alpha[:height, :width, None]
    rgb[top : top + height, left : left + width] = (region * (1 - a) + patch[:height, :width] * a).astype(np.uint8)


class MaskPainter:
    """Colours frames by one class map and draws the legend of the classes it contains."""

    def __init__(self, class_names: list[str], palette: np.ndarray, height: int, banner: str | None = None):
        self.class_names, self.palette = class_names, palette
        self.font_size = int(np.clip(height // 20, 8, 28))
        self._legends: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray] | None] = {}
        self._banner = render_label_box([(banner, None)], self.font_size, (255, 80, 80)) if banner else None
        self.set_map(None)

    def set_map(self, class_map: np.ndarray | None) -> None:
        if class_map is None:
            self._pixels, self._colours, self._legend = None, None, None
            return
        flat = class_map.reshape(-1)
        self._pixels = np.flatnonzero(flat)
        ids = flat[self._pixels]
        self._colours = self.palette[ids].astype(np.float32) * ALPHA
        present = tuple(int(c) for c in np.unique(ids))
        if present not in self._legends:
            lines = [(self.class_names[c] if c < len(self.class_names) else f"class {c}", self.palette[c])
                     for c in present]
            self._legends[present] = render_label_box(lines, self.font_size) if lines else None
        self._legend = self._legends[present]

    def paint(self, rgb: np.ndarray) -> np.ndarray:
        """The frame `[H, W, 3]` uint8 with the current map blended in, legend and banner drawn."""
        out = np.ascontiguousarray(rgb).copy()
        if self._pixels is not None and self._pixels.size:
            flat = out.reshape(-1, 3)
            flat[self._pixels] = (flat[self._pixels] * (1 - ALPHA) + self._colours).astype(np.uint8)
        if self._legend is not None:
            _paste(out, self._legend, 0, 0)
        if self._banner is not None:
            _paste(out, self._banner, max(0, out.shape[0] - self._banner[0].shape[0]), 0)
        return out


def _video_codec(width: int, height: int) -> tuple[str, str]:
    if "libx264" in av.codecs_available:
        # 4:2:0 needs even sides; odd-sized inputs keep their size in 4:4:4
        even = width % 2 == 0 and height % 2 == 0
        return "libx264", "yuv420p" if even else "yuv444p"
    if width % 2 or height % 2:
        raise VideoError(f"video {width}x{height}: odd frame sizes need libx264 for the overlay, "
                         "which this FFmpeg lacks; use --no-overlay")
    return "mpeg4", "yuv420p"


class OverlayWriter:
    """Writes `out_path` (mp4) while predictions arrive; see the module docstring.

    `push(frame_index, class_map)`: the prediction for decoded frame `frame_index` (indices must
    not decrease). `close()` writes the remaining frames with the last map and finishes the file
    (written to a temporary name and renamed, so a failed run leaves no half file); `abort()`
    drops it.
    """

    def __init__(self, info: VideoInfo, out_path: str | Path, *, class_names: list[str], palette: np.ndarray,
                 with_audio: bool = True, banner: str | None = None):
        self.info, self.out_path = info, Path(out_path)
        self.temp_path = self.out_path.with_name(f".{self.out_path.stem}.partial.mp4")
        self.painter = MaskPainter(class_names, palette, info.height, banner)
        self._frames = iter_frames(info)
        self._next: DecodedFrame | None = None
        self._last_pts = -1
        self.frames_written = 0
        self._out = av.open(str(self.temp_path), "w", format="mp4")
        try:
            self._video = self._add_video_stream()
            self._audio = self._add_audio(with_audio)
        except BaseException:
            self.abort()
            raise

    def _add_video_stream(self):
        info = self.info
        codec, pix_fmt = _video_codec(info.width, info.height)
        rate = info.rate if info.rate and 0 < info.rate <= 1000 else Fraction(30)
        stream = self._out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = info.width, info.height, pix_fmt
        time_base = info.time_base or Fraction(1, 90000)
        if codec == "mpeg4" and time_base.denominator > 65535:
            time_base = Fraction(1, 65535)
        self._time_base = time_base
        stream.codec_context.time_base = time_base
        stream.time_base = time_base
        if codec == "libx264":
            stream.codec_context.options = {"preset": "veryfast", "crf": "20"}
        stream.thread_type = "AUTO"
        return stream

    def _add_audio(self, with_audio: bool):
        audio = self.info.audio
        if not with_audio or audio is None:
            return None
        rate = audio.sample_rate if audio.sample_rate in AAC_RATES else 48000
        layout = "mono" if audio.channels == 1 else "stereo"
        try:
            stream = self._out.add_stream("aac", rate=rate, layout=layout)
        except (av.error.FFmpegError, ValueError) as err:
            warnings.warn(f"{self.info.path}: the overlay is written without audio ({err})", stacklevel=3)
            return None
        source = av.open(str(self.info.path))
        source_stream = source.streams.audio[0]
        self._audio_source = source
        self._audio_frames = source.decode(source_stream)
        self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        self._audio_rate = rate
        self._audio_layout = layout
        self._audio_samples = 0  # samples given to the encoder
        self._audio_offset: int | None = None  # samples to insert (> 0) or drop (< 0) at the start
        self._audio_done = False
        return stream

    def _encode_audio(self, frame: av.AudioFrame) -> None:
        if self._audio_offset is not None and self._audio_offset < 0:
            data = frame.to_ndarray()
            drop = min(-self._audio_offset, data.shape[1])
            self._audio_offset += drop
            if drop == data.shape[1]:
                return
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, drop:]), format="fltp",
                                               layout=self._audio_layout)
            frame.sample_rate = self._audio_rate
        frame.pts = None
        self._audio_samples += frame.samples
        self._out.mux(self._audio.encode(frame))

    def _mux_audio_until(self, seconds: float | None) -> None:
        """Encode source audio until `seconds` of it are written (None: all of it)."""
        if self._audio is None or self._audio_done:
            return
        while seconds is None or self._audio_samples < seconds * self._audio_rate:
            try:
                frame = next(self._audio_frames, None)
            except (av.error.FFmpegError, ValueError) as err:
                raise VideoError(f"video {self.info.path}: decoding the audio track failed ({err})") from None
            if self._audio_offset is None and frame is not None:
                start = (frame.time - self.info.origin) if frame.time is not None else 0.0
                self._audio_offset = int(round(start * self._audio_rate))
                if self._audio_offset > 0:  # the audio starts after the first video frame
                    channels = 1 if self._audio_layout == "mono" else 2
                    silence = av.AudioFrame.from_ndarray(np.zeros((channels, self._audio_offset), np.float32),
                                                         format="fltp", layout=self._audio_layout)
                    silence.sample_rate = self._audio_rate
                    self._encode_audio(silence)
                    self._audio_offset = 0
            for out in self._resampler.resample(frame):
                self._encode_audio(out)
            if frame is None:
                self._out.mux(self._audio.encode(None))
                self._audio_done = True
                return

    def _write(self, decoded: DecodedFrame) -> None:
        rgb = self.painter.paint(decoded.to_rgb(self.info.width, self.info.height))
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        pts = max(int(round(decoded.time / self._time_base)), self._last_pts + 1)
        frame.pts, frame.time_base = pts, self._time_base
        self._last_pts = pts
        self._out.mux(self._video.encode(frame))
        self.frames_written += 1
        self._mux_audio_until(decoded.time + (decoded.duration or 0.0))

    def _advance(self, until: int | None) -> None:
        """Write source frames with decode index < `until` (None: all) using the current map."""
        while True:
            if self._next is None:
                self._next = next(self._frames, None)
                if self._next is None:
                    return
            if until is not None and self._next.index >= until:
                return
            self._write(self._next)
            self._next = None

    def push(self, frame_index: int, class_map: np.ndarray) -> None:
        self._advance(frame_index)
        self.painter.set_map(class_map)

    def close(self) -> Path:
        try:
            self._advance(None)
            self._out.mux(self._video.encode(None))
            self._mux_audio_until(None)
        except BaseException:
            self.abort()
            raise
        self._release()
        self.temp_path.replace(self.out_path)
        return self.out_path

    def _release(self) -> None:
        self._frames.close()
        if getattr(self, "_audio_source", None) is not None:
            self._audio_source.close()
            self._audio_source = None
        if self._out is not None:
            self._out.close()
            self._out = None

    def abort(self) -> None:
        try:
            self._release()
        except (av.error.FFmpegError, ValueError, OSError):
            pass
        self.temp_path.unlink(missing_ok=True)
