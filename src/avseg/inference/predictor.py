"""`avseg predict` and `avseg.Predictor`: run a model on videos of any length, as a stream.

    predictor = Predictor.from_checkpoint("runs/qsd/best.pt", device="cuda")
    report = predictor.predict_video("street.mp4", "out/street")     # predictions.json content
    results = predictor.predict_clip(frames, waveform, 44100)       # one clip in memory

A video is decoded lazily; frames are sampled (the frame nearest each whole second by default),
each sampled frame gets the 0.975 s of 16 kHz mono audio starting at its sample time (one VGGish
log-mel example; with `audio.frontend: cavp` the CAVP front end's input, as evaluation makes it:
`avseg.inference.audio_input`), and the model runs on windows of T consecutive samples.
docs/predict.md has the rules, the memory behaviour and the output formats.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from avseg.audio.logmel import MIN_SAMPLES_PER_EXAMPLE, SAMPLE_RATE
from avseg.config import Config, load_config
from avseg.data.datasets import is_binary
from avseg.data.palette import voc_palette
from avseg.data.transforms import resize_longest_side, resize_square, to_normalized_tensor
from avseg.errors import UserError
from avseg.inference.audio_input import audio_rule
from avseg.inference.frame_output import OutputRules, frame_output
from avseg.inference.records import (
    FrameResult,
    FrameTally,
    PendingFrame,
    expected_samples,
    save_class_map,
    video_report,
)
from avseg.inference.video import (
    AudioTimeline,
    DecodedFrame,
    SilentTimeline,
    VideoError,
    VideoInfo,
    iter_frames,
    probe_video,
    sample_frames,
)

DEFAULT_WINDOW = 5  # frames per model call: the AVSBench S4 / MS3 clip length
AUDIO_SAMPLES = MIN_SAMPLES_PER_EXAMPLE  # 15600 samples (0.975 s) = one log-mel example
SECOND_SAMPLES = SAMPLE_RATE  # what the TD ablation's separator gets per frame
RANDOM_INIT_WARNING = ("RANDOM INIT: the model has random weights; every mask, score and box it "
                       "outputs is MEANINGLESS (use this for smoke and speed runs only)")
RUNTIMES = ("torch", "onnx")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto' (or None): CUDA when there is one, else CPU; anything else is checked."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise UserError(f"--device {device}: not a device ({err})") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine")
    return resolved


def default_class_names(config: Config) -> list[str]:
    if is_binary(config.data.dataset):
        return ["background", "sounding"]
    return ["background"] + [f"class {i}" for i in range(1, config.model.num_classes + 1)]


def check_audio(info: VideoInfo, allow_silent: bool) -> None:
    """VideoError for a video without an audio track, unless silence is allowed."""
    if info.audio is None and not allow_silent:
        raise VideoError(f"video {info.path}: has no audio track, and the model segments what it hears; "
                         "pass --allow-silent (allow_silent=True) to run it on silence")


class Predictor:
    """A model ready to segment sounding objects in clips and videos (SAM-style entry point).

    Args:
        model: an avseg model (QSD, its TD wrapper, or TPAVI); put in eval mode here.
        config: the config it was built from (dataset -> binary or semantic output).
        class_names: names by class id (0 = background); None: "background", then "sounding"
            for S4 / MS3 or "class i".
        device: where to run; None keeps the model where it is.
        mask_threshold, score_threshold: QSD's mask merge on semantic data (`avseg.frame_output`).
        random_init: the model is untrained: outputs are flagged and a warning is printed.
        runtime: "torch", or "onnx" with `model` an `avseg.inference.onnx_runtime.OnnxModel` (an
            exported graph run by ONNX Runtime on the CPU; `Predictor.from_onnx` builds one).
    """

    def __init__(self, model: nn.Module, config: Config, class_names: Sequence[str] | None = None, *,
                 device: str | torch.device | None = None, mask_threshold: float = 0.5,
                 score_threshold: float = 0.3, random_init: bool = False,
                 checkpoint: str | Path | None = None, config_path: str | Path | None = None,
                 runtime: str = "torch"):
        if runtime not in RUNTIMES:
            raise UserError(f"runtime '{runtime}': expected one of {', '.join(RUNTIMES)}")
        self.runtime = runtime
        if runtime == "onnx" and not hasattr(model, "run_graph"):
            raise UserError(f"runtime 'onnx' needs an OnnxModel (Predictor.from_onnx), got a {type(model).__name__}")
        self.onnx_path = str(model.path) if runtime == "onnx" else None
        self.config = config
        self.binary = is_binary(config.data.dataset)
        expected = 2 if self.binary else config.model.num_classes + 1
        names = list(class_names) if class_names is not None else None
        if names is not None and len(names) != expected:
            warnings.warn(f"{len(names)} class names given for {expected} class ids (background included); "
                          "using generic names", stacklevel=2)
            names = None
        self.class_names = names or default_class_names(config)
        if runtime == "onnx":
            if device is not None and resolve_device(device).type != "cpu":
                raise UserError("runtime 'onnx' runs on the CPU here (ONNX Runtime's CPU provider)")
            self.device, self.model = torch.device("cpu"), model
        elif device is None:
            parameter = next(model.parameters(), None)
            self.device = parameter.device if parameter is not None else torch.device("cpu")
        else:
            self.device = resolve_device(device)
        if runtime == "torch":
            self.model = model.to(self.device).eval()
        # the ONNX graph has a fixed clip length: windows are that long
        self.default_window = model.frames if runtime == "onnx" else DEFAULT_WINDOW
        self.image_size = config.data.image_size
        # the evaluation resize of the config (`data.resize`): predict sees frames as eval does
        self.longest_side = config.data.resize == "longest_side"
        self.rules = OutputRules(self.binary, tuple(self.class_names), mask_threshold, score_threshold)
        self.random_init = random_init
        self.checkpoint = str(checkpoint) if checkpoint is not None else None
        self.config_path = str(config_path) if config_path is not None else None
        self.palette = voc_palette(max(len(self.class_names), 2))
        self.uses_waveform = getattr(model, "separator", None) is not None
        self.audio = audio_rule(config)  # the front end's input per frame, as evaluation makes it

    @property
    def mask_threshold(self) -> float:
        return self.rules.mask_threshold

    @property
    def score_threshold(self) -> float:
        return self.rules.score_threshold

    # construction ------------------------------------------------------------------------------

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", **kwargs) -> Predictor:
        """Rebuild the model a checkpoint holds (its stored config), with its class names."""
        from avseg.engine.checkpoint import model_from_checkpoint

        device = resolve_device(device)
        model, config, checkpoint = model_from_checkpoint(path, map_location=device)
        names = checkpoint.get("class_names")
        return cls(model, config, names, device=device, checkpoint=path, **kwargs)

    @classmethod
    def from_onnx(cls, path: str | Path, *, intra_op_threads: int | None = None, **kwargs) -> Predictor:
        """An exported graph (`avseg export`) run by ONNX Runtime; config and class names come from
        its metadata. Same outputs as the PyTorch model (docs/predict.md, "ONNX Runtime")."""
        from avseg.inference.onnx_runtime import OnnxModel

        model = OnnxModel(path, intra_op_threads=intra_op_threads)
        if model.random_init:
            warnings.warn(RANDOM_INIT_WARNING, stacklevel=2)
        return cls(model, model.config, model.class_names, runtime="onnx", random_init=model.random_init, **kwargs)

    @classmethod
    def from_config(cls, path: str | Path, overrides: Sequence[str] = (), device: str | torch.device = "cpu",
                    **kwargs) -> Predictor:
        """An UNTRAINED model from a config (random weights, weight files ignored): smoke and speed
        runs only. Warns loudly; outputs are flagged `random_init`."""
        from avseg.models.build import build_model

        config = load_config(path, [*overrides, "model.backbone_weights=", "audio.vggish_weights="])
        warnings.warn(RANDOM_INIT_WARNING, stacklevel=2)
        torch.manual_seed(config.seed)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(no weights|random init).*")
            model = build_model(config)
        return cls(model, config, None, device=device, random_init=True, config_path=path, **kwargs)

    # the model on prepared windows -------------------------------------------------------------

    def _image(self, rgb: np.ndarray) -> Tensor:
        resize = resize_longest_side if self.longest_side else resize_square
        return to_normalized_tensor(resize(Image.fromarray(rgb), self.image_size))

    def _item(self, time: float, frame_index: int, frame_time: float, rgb: np.ndarray,
              wave: np.ndarray, source: str = "the audio") -> PendingFrame:
        return PendingFrame(time, frame_index, frame_time, self._image(rgb), self.audio.features(wave, source),
                            self.audio.separator_wave(wave) if self.uses_waveform else None, rgb.shape[:2])

    @torch.inference_mode()
    def _run(self, windows: list[list[PendingFrame]]) -> list[list[tuple[np.ndarray, list[dict]]]]:
        """Run B windows of T items each (same T); per window, per item (class map, objects)."""
        frames = torch.stack([torch.stack([item.image for item in w]) for w in windows]).to(self.device)
        log_mel = torch.from_numpy(np.stack([np.stack([item.log_mel for item in w]) for w in windows]))
        inputs = {"frames": frames, "log_mel": log_mel.to(self.device),
                  "frame_present": torch.ones(frames.shape[:2], dtype=torch.bool, device=self.device)}
        if self.uses_waveform:
            waves = np.stack([np.concatenate([item.wave for item in w]) for w in windows])
            inputs["waveform"] = torch.from_numpy(waves).to(self.device)
        outputs = self.model(**inputs)
        steps = frames.shape[1]
        side = self.image_size if self.longest_side else None
        return [[frame_output(outputs, b * steps + t, item.size, self.rules, side) for t, item in enumerate(w)]
                for b, w in enumerate(windows)]

    # clips in memory ---------------------------------------------------------------------------

    def predict_clip(self, frames: np.ndarray | Tensor, waveform: np.ndarray | Tensor | None,
                     sample_rate: int = SAMPLE_RATE, *, times: Sequence[float] | None = None) -> list[dict]:
        """Segment one clip held in memory, in ONE model call over all its frames.

        Args:
            frames: uint8 `[T, H, W, 3]` RGB (numpy or torch).
            waveform: `[samples]` or `[samples, channels]` at `sample_rate`, starting at time 0;
                None = silence.
            times: each frame's time in seconds; default 0, 1, ..., T-1 (one frame per second as
                AVSBench). Frame t hears the 0.975 s from times[t] (the CAVP front end: 1 s or
                3 s, `avseg.inference.audio_input`).

        Returns:
            per frame `{"time", "class_map": [H, W] class ids, "objects": [...]}`.
        """
        frames = frames.cpu().numpy() if isinstance(frames, Tensor) else np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [T, H, W, 3]; got {frames.dtype} {tuple(frames.shape)}")
        times = list(range(len(frames))) if times is None else [float(t) for t in times]
        if len(times) != len(frames):
            raise ValueError(f"{len(times)} times for {len(frames)} frames")
        if isinstance(waveform, Tensor):
            waveform = waveform.cpu().numpy()
        audio = self.audio.waveform(waveform, sample_rate)
        items = []
        for index, (time, rgb) in enumerate(zip(times, frames)):
            wave = self.audio.cut(audio, int(round(time * SAMPLE_RATE)))
            items.append(self._item(time, index, time, np.ascontiguousarray(rgb), wave))
        if not items:
            return []
        results = self._run([items])[0]
        return [{"time": item.time, "class_map": class_map, "objects": objects}
                for item, (class_map, objects) in zip(items, results)]

    # videos as streams -------------------------------------------------------------------------

    def open_audio(self, info: VideoInfo, allow_silent: bool):
        """The audio timeline of a video; without an audio track, silence if allowed, else an error."""
        check_audio(info, allow_silent)
        if info.audio is not None:
            return AudioTimeline(info, keep_channels=self.audio.keeps_channels)
        message = f"video {info.path}: no audio track: running on silence (--allow-silent)"
        warnings.warn(message, stacklevel=3)
        return SilentTimeline()

    def stream(self, path: str | Path, *, fps: float | None = 1.0, every_frame: bool = False,
               window: int | None = None, batch: int = 1, allow_silent: bool = False,
               progress: bool = False) -> Iterator[FrameResult]:
        """Yield a `FrameResult` per sampled frame of the video at `path`, window by window.

        Memory does not grow with the video's length (docs/predict.md, "Memory")."""
        rate = None if every_frame else fps
        window = self._window(window, batch, rate)
        info = probe_video(path)
        with self.open_audio(info, allow_silent) as audio:
            yield from self._results(info, audio, rate=rate, window=window, batch=batch, progress=progress)

    def _window(self, window: int | None, batch: int, rate: float | None) -> int:
        """The window length to run (None: the default), after checking window, batch and rate."""
        window = self.default_window if window is None else window
        if self.runtime == "onnx" and window != self.default_window:
            raise UserError(f"--window {window}: the ONNX graph {self.onnx_path} was exported for clips of "
                            f"{self.default_window} frames (avseg export --frames)")
        if window < 1 or batch < 1:
            raise UserError(f"window ({window}) and batch ({batch}) must be at least 1")
        if rate is not None and not rate > 0:
            raise UserError(f"--fps {rate}: must be a positive number of frames per second")
        return window

    def _results(self, info: VideoInfo, audio, *, rate: float | None, window: int, batch: int,
                 progress: bool, tally: FrameTally | None = None) -> Iterator[FrameResult]:
        from tqdm import tqdm

        from avseg.progress import progress_bars_off

        tally = tally or FrameTally(info.fps)
        total = expected_samples(info, rate)
        bar = tqdm(total=total, unit="frame", desc=info.path.name, disable=not progress or progress_bars_off(), leave=False,
                   dynamic_ncols=True, file=sys.stderr)
        pending: list[PendingFrame] = []
        history: deque[PendingFrame] = deque(maxlen=window)
        counter = 0

        def emit(items: list[PendingFrame], results) -> Iterator[FrameResult]:
            nonlocal counter
            for item, (class_map, objects) in zip(items, results):
                history.append(item)
                yield FrameResult(counter, round(item.time, 6), item.frame_index, round(item.frame_time, 6),
                                  class_map, objects)
                counter += 1
                bar.update(1)

        try:
            for time, decoded in sample_frames(tally.wrap(iter_frames(info)), rate):
                pending.append(self._item_from_frame(time, decoded, info, audio))
                if len(pending) == window * batch:
                    windows = [pending[i : i + window] for i in range(0, len(pending), window)]
                    for w, results in zip(windows, self._run(windows)):
                        yield from emit(w, results)
                    pending = []
            full = len(pending) // window * window
            if full:
                windows = [pending[i : i + window] for i in range(0, full, window)]
                for w, results in zip(windows, self._run(windows)):
                    yield from emit(w, results)
            rest = pending[full:]
            if rest:  # a short last window borrows already processed frames as context
                context = list(history)[len(history) - min(len(history), window - len(rest)):]
                results = self._run([context + rest])[0][len(context):]
                yield from emit(rest, results)
        finally:
            bar.close()

    def _item_from_frame(self, time: float, decoded: DecodedFrame, info: VideoInfo, audio) -> PendingFrame:
        rgb = decoded.to_rgb(info.width, info.height)
        wave = audio.window(time, self.audio.samples, trim_end=self.audio.trims_end)
        return self._item(time, decoded.index, decoded.time, rgb, wave, f"video {info.path}")

    def predict_video(self, path: str | Path, out_dir: str | Path | None = None, *, fps: float | None = 1.0,
                      every_frame: bool = False, window: int | None = None, batch: int = 1,
                      allow_silent: bool = False, overlay: bool = True, progress: bool = False,
                      on_frame: Callable[[FrameResult], None] | None = None, overwrite: bool = False) -> dict:
        """Segment a whole video as a stream; return (and with `out_dir`, write) predictions.json.

        With `out_dir`: `masks/frame_NNNNNN.png` (class ids; palette PNG), `overlay.mp4` (unless
        `overlay=False`) and `predictions.json`. Without it nothing is written and the frames'
        "mask" entries are None; `on_frame` gets every `FrameResult` (with its class map) as it
        is produced, so the maps need not be kept. A non-empty `out_dir` is refused unless
        `overwrite`; then only an earlier run's own files are replaced (`avseg.inference.outputs`).
        """
        from avseg.inference.overlay import OverlayWriter
        from avseg.inference.outputs import prepare_output_dir

        rate = None if every_frame else fps
        window = self._window(window, batch, rate)  # before any file is written
        info = probe_video(path)
        out = Path(out_dir) if out_dir is not None else None
        writer = None
        entries: list[dict] = []
        tally = FrameTally(info.fps)
        with self.open_audio(info, allow_silent) as audio:
            silent = isinstance(audio, SilentTimeline)
            if out is not None:
                prepare_output_dir(out, overwrite)
                if overlay:
                    writer = OverlayWriter(info, out / "overlay.mp4", class_names=self.class_names,
                                           palette=self.palette, with_audio=not silent,
                                           banner="RANDOM INIT: MEANINGLESS" if self.random_init else None)
            try:
                for result in self._results(info, audio, rate=rate, window=window, batch=batch, progress=progress,
                                            tally=tally):
                    mask_path = None
                    if out is not None:
                        mask_path = f"masks/frame_{result.index:06d}.png"
                        save_class_map(result.class_map, out / mask_path)
                    if writer is not None:
                        writer.push(result.frame_index, result.class_map)
                    entries.append({"time": result.time, "frame_time": result.frame_time,
                                    "frame_index": result.frame_index, "mask": mask_path,
                                    "objects": result.objects})
                    if on_frame is not None:
                        on_frame(result)
                if writer is not None:
                    writer.close()
            except BaseException:
                if writer is not None:
                    writer.abort()
                raise
            if not silent and audio.samples_decoded == 0:
                warnings.warn(f"video {info.path}: the audio track holds no samples: the model heard silence",
                              stacklevel=2)
                silent = True
        report = video_report(self, info, tally, silent, rate=rate, window=window,
                              overlay=writer is not None, frames=entries)
        if out is not None:
            (out / "predictions.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        return report
