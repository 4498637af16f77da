"""`avseg bench predict`: `avseg predict` on videos of several lengths: real-time factor, frames
and peak memory, and whether memory stays flat as the video grows.

Test videos with sound are written by the app's example writer (`avseg.data.synth.video.
write_synthetic_video`: one synthetic scene per second at 12 fps, AAC audio) in a temporary
folder. Each (video, mode) runs in its own Python process, which builds the model as `avseg
predict` does (`Predictor.from_config` / `from_checkpoint`) and calls `Predictor.predict_video`
with the CLI's defaults (masks, predictions.json and overlay.mp4 written, window 5, batch 1) after
one untimed warm-up window (`predict_clip`), then reports its own peak resident set size (`getrusage(RUSAGE_SELF)`: the whole process, Python,
PyTorch and the model included). Modes: `1fps` (the default of `avseg predict`), `Nfps`
(`--fps N`), `dense` (`--every-frame`: every frame at the video's native rate, 12 fps here).
"""

from __future__ import annotations

import re
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avseg.bench.common import (RANDOM_INIT, WEIGHT_WARNINGS, check_device, int_list, peak_rss_mb,
                                run_worker, worker_main, write_rows)
from avseg.errors import UserError

DEFAULT_CONFIG = "configs/qsd_r50_avss.yaml"
TARGET_PEAK_RATIO = 1.2
_FPS_MODE = re.compile(r"^(\d+(?:\.\d+)?)fps$")


@dataclass
class PredictRow:
    mode: str  # 1fps / Nfps / dense
    seconds: int  # requested video length
    video_s: float  # its measured duration (predictions.json video.duration)
    video_fps: float  # its native frame rate
    frames: int  # frames processed (sampled)
    load_s: float  # building the model and one warm-up window, in the subprocess
    process_s: float  # predict_video: decoding, audio, model, masks, overlay, json
    wall_s: float  # the whole subprocess: interpreter start, imports, model, processing
    rtf: float  # real-time factor: process_s / video_s
    peak_rss_mb: float  # the subprocess's peak resident set size
    peak_ratio: float  # peak_rss_mb / that of the shortest video of the same mode
    device: str
    model: str  # config (random init) or checkpoint
    overlay: bool


def mode_options(mode: str) -> dict:
    """predict_video's sampling options of a mode: 1fps, Nfps or dense."""
    if mode == "dense":
        return {"every_frame": True}
    match = _FPS_MODE.match(mode)
    if match is None or not float(match.group(1)) > 0:
        raise UserError(f"--modes: unknown mode '{mode}'; expected 1fps, Nfps (e.g. 5fps) or dense")
    return {"fps": float(match.group(1))}


def parse_size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if match is None:
        raise UserError(f"--video-size {text}: expected WIDTHxHEIGHT, e.g. 320x240")
    width, height = int(match.group(1)), int(match.group(2))
    if width < 32 or height < 32 or width % 2 or height % 2 or max(width, height) > 2048:
        raise UserError(f"--video-size {text}: width and height must be even, at least 32 and at most 2048")
    return width, height


def write_video(path: Path, seconds: int, size: tuple[int, int]) -> Path:
    """A synthetic multi-source video with sound of `seconds` seconds (the app's example writer)."""
    from avseg.data.synth.video import ExampleSpec, write_synthetic_video
    from avseg.data.synth import build_class_bank

    return write_synthetic_video(path, build_class_bank(0, 8), ExampleSpec(path.name, seconds, True, seconds, size))


def measure_predict(video: str, out: str, *, mode: str, config: str | None = None, overrides: list[str] = (),
                    checkpoint: str | None = None, device: str = "cpu", overlay: bool = True) -> dict:
    """One predict run in this process (the subprocess of `predict_isolated`): times, frames, peak.

    load_s: building the model and one warm-up window (so that process_s holds no first-call costs).
    """
    from avseg.inference.predictor import Predictor

    options = mode_options(mode)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=WEIGHT_WARNINGS)
        warnings.filterwarnings("ignore", message=".*RANDOM INIT.*")
        if checkpoint is not None:
            predictor = Predictor.from_checkpoint(checkpoint, device=device)
        else:
            predictor = Predictor.from_config(config, list(overrides), device=device)
    import avseg.inference.overlay  # noqa: F401  (imported by predict_video on its first call)
    from avseg.inference.predictor import DEFAULT_WINDOW

    predictor.predict_clip(np.zeros((DEFAULT_WINDOW, 64, 64, 3), np.uint8), None)  # first-call costs
    loaded = time.perf_counter()
    report = predictor.predict_video(video, out, overlay=overlay, progress=False, **options)
    done = time.perf_counter()
    return {"load_s": loaded - start, "process_s": done - loaded, "frames": len(report["frames"]),
            "video_s": float(report["video"]["duration"]), "video_fps": float(report["video"]["fps"]),
            "peak_rss_mb": peak_rss_mb(), "device": str(predictor.device)}


def predict_isolated(video: Path, out: Path, **kwargs) -> dict:
    """`measure_predict` in a fresh Python process; adds the process's wall time."""
    start = time.perf_counter()
    result = run_worker("avseg.bench.predict", {"video": str(video), "out": str(out), **kwargs},
                        f"bench predict {video.name} ({kwargs.get('mode')})")
    result["wall_s"] = time.perf_counter() - start
    return result


def run_predict(seconds: list[int], modes: list[str], *, config: str | None = None, overrides: list[str] = (),
                checkpoint: str | None = None, device: str = "cpu", size: tuple[int, int] = (320, 240),
                overlay: bool = True, progress=print) -> list[PredictRow]:
    for mode in modes:
        mode_options(mode)
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise UserError(f"--checkpoint {checkpoint}: not found")
    if checkpoint is None:
        config = config or DEFAULT_CONFIG
        overrides = [*RANDOM_INIT, *overrides]
    check_device(device)
    rows: list[PredictRow] = []
    with tempfile.TemporaryDirectory(prefix="avseg-bench-predict-") as tmp:
        for length in sorted(set(seconds)):
            video = write_video(Path(tmp) / f"synthetic-{length}s.mp4", length, size)
            for mode in modes:
                result = predict_isolated(video, Path(tmp) / f"out-{length}s-{mode}", mode=mode, config=config,
                                          overrides=list(overrides), checkpoint=checkpoint, device=device,
                                          overlay=overlay)
                shortest = next((r.peak_rss_mb for r in rows if r.mode == mode), result["peak_rss_mb"])
                rows.append(PredictRow(
                    mode=mode, seconds=length, video_s=round(result["video_s"], 3),
                    video_fps=round(result["video_fps"], 3), frames=result["frames"],
                    load_s=round(result["load_s"], 3), process_s=round(result["process_s"], 3),
                    wall_s=round(result["wall_s"], 3), rtf=round(result["process_s"] / result["video_s"], 4),
                    peak_rss_mb=round(result["peak_rss_mb"], 1),
                    peak_ratio=round(result["peak_rss_mb"] / shortest, 4), device=result["device"],
                    model=str(checkpoint or config), overlay=overlay,
                ))
                progress(f"  {length} s, {mode}: {rows[-1].frames} frames in {rows[-1].process_s:.1f} s, "
                         f"peak {rows[-1].peak_rss_mb:.0f} MB")
    return rows


def format_predict_table(rows: list[PredictRow]) -> str:
    lines = [f"model {rows[0].model}{'' if rows[0].model.endswith('.pt') else ' (random init)'} on {rows[0].device}; "
             f"overlay {'on' if rows[0].overlay else 'off'}",
             f"{'mode':<8}{'video s':>9}{'fps':>7}{'frames':>8}{'load s':>8}{'process s':>11}{'wall s':>9}"
             f"{'RTF':>8}{'peak MB':>9}{'x shortest':>11}"]
    for r in rows:
        lines.append(f"{r.mode:<8}{r.video_s:>9.2f}{r.video_fps:>7.2f}{r.frames:>8}{r.load_s:>8.2f}"
                     f"{r.process_s:>11.2f}{r.wall_s:>9.2f}{r.rtf:>8.3f}{r.peak_rss_mb:>9.0f}{r.peak_ratio:>11.3f}")
    lengths = sorted({r.seconds for r in rows})
    if len(lengths) > 1:
        longest = {r.mode: r.peak_ratio for r in rows if r.seconds == lengths[-1]}
        ratios = ", ".join(f"{mode} {ratio:.3f}" for mode, ratio in longest.items())
        lines.append(f"peak({lengths[-1]} s) / peak({lengths[0]} s): {ratios} (target <= {TARGET_PEAK_RATIO:g})")
    lines.append("RTF = process s / video s (below 1: faster than real time)")
    return "\n".join(lines)


def run_cli(args) -> int:
    from avseg.cli_common import config_and_overrides

    config, overrides = config_and_overrides(args)
    if args.checkpoint is not None and (config is not None or args.random_init or overrides):
        raise UserError("give either --checkpoint (a trained model) or CONFIG with --random-init "
                        "(and config overrides), not both")
    if config is not None and not args.random_init:
        raise UserError(f"CONFIG {config} builds an untrained model: add --random-init (a speed run "
                        "needs no trained weights) or give --checkpoint")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes:
        raise UserError("--modes: give at least one of 1fps, Nfps, dense")
    rows = run_predict(int_list(args.seconds, "--seconds", minimum=1), modes, config=config,
                       overrides=overrides, checkpoint=args.checkpoint, device=args.device,
                       size=parse_size(args.video_size), overlay=not args.no_overlay,
                       progress=lambda m: print(m, flush=True))
    print(format_predict_table(rows))
    write_rows(args.json, rows)
    return 0


if __name__ == "__main__":  # worker of predict_isolated
    worker_main(lambda request: measure_predict(request.pop("video"), request.pop("out"), **request))
