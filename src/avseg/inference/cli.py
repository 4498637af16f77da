"""`avseg predict [CONFIG] [key=value ...] -i VIDEO [-i VIDEO ...] --out DIR (--checkpoint CKPT | --random-init)`.

CONFIG (with `--random-init`): an untrained model from a config; a checkpoint carries its own
config. The old grammar (videos as positional arguments, `--config CFG`, `--random-init KEY=VALUE`,
`--batch`) still works this release, with a warning.

One Predictor for all inputs; each video is processed as a stream (`avseg.inference.predictor`). A video that
fails is reported in one line naming it and the others go on; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from avseg.cli_common import (add_batch_size_argument, add_config_arguments, add_device_argument,
                              add_progress_argument, config_overrides_paths, warn_deprecated)
from avseg.config import ConfigDeprecationWarning
from avseg.errors import UserError
from avseg.inference.outputs import check_output_dir
from avseg.inference.predictor import DEFAULT_WINDOW, RANDOM_INIT_WARNING, Predictor, check_audio
from avseg.inference.video import probe_video



def add_model_arguments(parser: argparse.ArgumentParser, meaningless: str) -> None:
    """Where the model comes from, and its output thresholds (shared by `predict` and `app`)."""
    add_config_arguments(parser, required=False, config_alias=True,
                         help="a config to build an UNTRAINED model from (with --random-init)")
    source = parser.add_argument_group("model")
    source.add_argument("--checkpoint", type=Path, help="a trained avseg checkpoint (it carries its config)")
    source.add_argument("--random-init", action="store_true",
                        help=f"with CONFIG: random weights, {meaningless}")
    add_device_argument(source)
    source.add_argument("--mask-threshold", type=float, default=0.5,
                        help="QSD on semantic data: mask probability a pixel needs (default 0.5)")
    source.add_argument("--score-threshold", type=float, default=0.3,
                        help="QSD on semantic data: class score a candidate needs (default 0.3)")


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--input", dest="videos", action="append", default=[], metavar="VIDEO",
                        help="a video file (any container and codec FFmpeg reads); repeat for several: -i a.mp4 -i b.mp4")
    parser.add_argument("--out", required=True, type=Path, help="output folder (one sub-folder per video when several)")
    add_model_arguments(parser, "the output is MEANINGLESS (smoke / speed runs)")
    parser.add_argument("--runtime", nargs="+", default=["torch"], metavar=("torch|onnx", "MODEL.onnx"),
                        help="torch (default: the PyTorch model of --checkpoint / CONFIG), or onnx MODEL.onnx: "
                             "a graph written by `avseg export`, run by ONNX Runtime on the CPU")
    sampling = parser.add_mutually_exclusive_group()
    sampling.add_argument("--fps", type=float, default=1.0,
                          help="frames sampled per second: the frame nearest each t = k / fps (default 1)")
    sampling.add_argument("--every-frame", action="store_true", help="process every decoded frame")
    parser.add_argument("--window", type=int, default=None,
                        help=f"frames per model call (default {DEFAULT_WINDOW}, the clip length of AVSBench)")
    add_batch_size_argument(parser, 1, "windows per model call (default 1)", old="--batch")
    parser.add_argument("--allow-silent", action="store_true", help="run videos without an audio track on silence")
    parser.add_argument("--no-overlay", action="store_true", help="do not write overlay.mp4")
    add_progress_argument(parser)
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty output folder, replacing only an earlier avseg predict's files")


def output_dirs(videos: list[Path], out: Path) -> list[Path]:
    """`out` for one video; `out/<stem>` for several, de-duplicated as stem, stem-2, stem-3, ..."""
    if len(videos) == 1:
        return [out]
    used: set[str] = set()
    dirs = []
    for video in videos:
        stem = video.stem or "video"
        name, n = stem, 1
        while name in used:
            n += 1
            name = f"{stem}-{n}"
        used.add(name)
        dirs.append(out / name)
    return dirs


def build_predictor(args: argparse.Namespace, config: str | None, overrides: list[str]) -> Predictor:
    """The Predictor of `add_model_arguments`' options: a checkpoint, CONFIG with --random-init, or ONNX."""
    thresholds = {"mask_threshold": args.mask_threshold, "score_threshold": args.score_threshold}
    runtime = getattr(args, "runtime", None) or ["torch"]
    if runtime[0] not in ("torch", "onnx") or len(runtime) != (2 if runtime[0] == "onnx" else 1):
        raise UserError(f"--runtime {' '.join(runtime)}: expected 'torch' or 'onnx MODEL.onnx'")
    if runtime[0] == "onnx":
        if args.checkpoint is not None or config is not None or overrides or args.random_init:
            raise UserError("--runtime onnx MODEL.onnx: the graph carries its model and config; "
                            "give no --checkpoint, CONFIG, overrides or --random-init")
        if args.device not in ("auto", "cpu"):
            raise UserError(f"--device {args.device}: --runtime onnx runs on the CPU")
        return Predictor.from_onnx(runtime[1], **thresholds)
    if args.checkpoint is not None and config is not None:
        raise UserError("give either --checkpoint (a trained model) or CONFIG with --random-init, not both")
    if args.checkpoint is not None:
        if overrides or args.random_init:
            raise UserError("--checkpoint rebuilds the model from its stored config: config overrides and "
                            "--random-init only go with CONFIG")
        return Predictor.from_checkpoint(args.checkpoint, device=args.device, **thresholds)
    if config is None:
        raise UserError("no model: give --checkpoint CKPT (or CONFIG --random-init for a smoke run)")
    if not args.random_init:
        raise UserError(f"CONFIG {config} builds an untrained model; add --random-init to run it anyway "
                        "(its output is meaningless) or give --checkpoint")
    print(f"\n*** WARNING: {RANDOM_INIT_WARNING} ***\n", file=sys.stderr, flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("default", ConfigDeprecationWarning)  # old config keys are still named
        return Predictor.from_config(config, overrides, device=args.device, **thresholds)


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"avseg predict: warning: {message}", file=sys.stderr, flush=True)


def run_cli(args: argparse.Namespace) -> int:
    config, overrides, old_videos = config_overrides_paths(args, other_paths=True)
    if old_videos:
        warn_deprecated("videos as positional arguments", "-i/--input VIDEO (the positional argument is CONFIG)")
    videos = [Path(v) for v in [*args.videos, *old_videos]]
    if not videos:
        raise UserError("no video given: add -i VIDEO (repeatable)")
    if not args.fps > 0:
        raise UserError(f"--fps {args.fps}: must be a positive number of frames per second")
    if (args.window is not None and args.window < 1) or args.batch_size < 1:
        raise UserError(f"--window ({args.window}) and --batch-size ({args.batch_size}) must be at least 1")
    failed, ready = [], []
    for video, out in zip(videos, output_dirs(videos, args.out)):
        try:  # report unusable inputs at once, before the model is loaded and long videos run
            check_output_dir(out, args.overwrite)
            check_audio(probe_video(video), args.allow_silent)
            ready.append((video, out))
        except UserError as err:
            _report_failure(err, video, failed)
    if not ready:
        return _summary(failed, len(videos))
    predictor = build_predictor(args, config, overrides)
    for video, out in ready:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                warnings.showwarning = _print_warning
                report = predictor.predict_video(
                    video, out, fps=args.fps, every_frame=args.every_frame, window=args.window,
                    batch=args.batch_size, allow_silent=args.allow_silent, overlay=not args.no_overlay,
                    progress=not args.no_progress, overwrite=args.overwrite)
        except (UserError, OSError) as err:  # OSError: the output folder cannot be written
            _report_failure(err, video, failed)
            continue
        note = " (on silence)" if report["silent"] else ""
        note += " [RANDOM INIT: meaningless]" if predictor.random_init else ""
        print(f"{video}: {len(report['frames'])} frames{note} -> {out}", flush=True)
    return _summary(failed, len(videos))


def _report_failure(err: Exception, video: Path, failed: list[Path]) -> None:
    print(f"avseg predict: error: {err}", file=sys.stderr, flush=True)
    failed.append(video)


def _summary(failed: list[Path], total: int) -> int:
    if not failed:
        return 0
    if total > 1:  # one video: its own error line says it all
        print(f"avseg predict: {len(failed)} of {total} videos failed: " + ", ".join(str(v) for v in failed),
              file=sys.stderr)
    return 1
