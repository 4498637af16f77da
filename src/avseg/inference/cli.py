"""`avseg predict VIDEO [VIDEO ...] --out DIR (--checkpoint CKPT | --config CFG --random-init)`.

One Predictor for all inputs; each video is processed as a stream (`avseg.inference.predictor`). A video that
fails is reported in one line naming it and the others go on; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from avseg.config import OVERRIDE_PATTERN
from avseg.errors import UserError
from avseg.inference.outputs import check_output_dir
from avseg.inference.predictor import DEFAULT_WINDOW, RANDOM_INIT_WARNING, Predictor, check_audio
from avseg.inference.video import probe_video



def add_model_arguments(parser: argparse.ArgumentParser, meaningless: str) -> None:
    """Where the model comes from, and its output thresholds (shared by `predict` and `app`)."""
    source = parser.add_argument_group("model")
    source.add_argument("--checkpoint", type=Path, help="a trained avseg checkpoint")
    source.add_argument("--config", type=Path, help="a config to build an UNTRAINED model from (needs --random-init)")
    source.add_argument("--random-init", nargs="*", default=None, metavar="KEY=VALUE",
                        help=f"with --config: random weights, {meaningless}; "
                             "dotted config overrides may follow, e.g. --random-init data.image_size=64")
    source.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    source.add_argument("--mask-threshold", type=float, default=0.5,
                        help="QSD on semantic data: mask probability a pixel needs (default 0.5)")
    source.add_argument("--score-threshold", type=float, default=0.3,
                        help="QSD on semantic data: class score a candidate needs (default 0.3)")


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="VIDEO",
                        help="video files (any container and codec FFmpeg reads)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (one sub-folder per video when several)")
    add_model_arguments(parser, "the output is MEANINGLESS (smoke / speed runs)")
    parser.add_argument("--runtime", nargs="+", default=["torch"], metavar=("torch|onnx", "MODEL.onnx"),
                        help="torch (default: the PyTorch model of --checkpoint / --config), or onnx MODEL.onnx: "
                             "a graph written by `avseg export`, run by ONNX Runtime on the CPU")
    sampling = parser.add_mutually_exclusive_group()
    sampling.add_argument("--fps", type=float, default=1.0,
                          help="frames sampled per second: the frame nearest each t = k / fps (default 1)")
    sampling.add_argument("--every-frame", action="store_true", help="process every decoded frame")
    parser.add_argument("--window", type=int, default=None,
                        help=f"frames per model call (default {DEFAULT_WINDOW}, the clip length of AVSBench)")
    parser.add_argument("--batch", type=int, default=1, help="windows per model call (default 1)")
    parser.add_argument("--allow-silent", action="store_true", help="run videos without an audio track on silence")
    parser.add_argument("--no-overlay", action="store_true", help="do not write overlay.mp4")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty output folder, replacing only an earlier avseg predict's files")


def _split_inputs(inputs: list[str]) -> tuple[list[Path], list[str]]:
    videos, overrides = [], []
    for item in inputs:
        if OVERRIDE_PATTERN.match(item) and not Path(item).exists():
            overrides.append(item)
        else:
            videos.append(Path(item))
    return videos, overrides


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


def build_predictor(args: argparse.Namespace, overrides: list[str]) -> Predictor:
    thresholds = {"mask_threshold": args.mask_threshold, "score_threshold": args.score_threshold}
    runtime = getattr(args, "runtime", None) or ["torch"]
    if runtime[0] not in ("torch", "onnx") or len(runtime) != (2 if runtime[0] == "onnx" else 1):
        raise UserError(f"--runtime {' '.join(runtime)}: expected 'torch' or 'onnx MODEL.onnx'")
    if runtime[0] == "onnx":
        if args.checkpoint is not None or args.config is not None or overrides or args.random_init is not None:
            raise UserError("--runtime onnx MODEL.onnx: the graph carries its model and config; "
                            "give no --checkpoint, --config, overrides or --random-init")
        if args.device not in ("auto", "cpu"):
            raise UserError(f"--device {args.device}: --runtime onnx runs on the CPU")
        return Predictor.from_onnx(runtime[1], **thresholds)
    if args.checkpoint is not None and args.config is not None:
        raise UserError("give either --checkpoint (a trained model) or --config with --random-init, not both")
    if args.checkpoint is not None:
        if overrides or args.random_init is not None:
            raise UserError("--checkpoint rebuilds the model from its stored config: config overrides and "
                            "--random-init only go with --config")
        return Predictor.from_checkpoint(args.checkpoint, device=args.device, **thresholds)
    if args.config is None:
        raise UserError("no model: give --checkpoint CKPT (or --config CFG --random-init for a smoke run)")
    if args.random_init is None:
        raise UserError(f"--config {args.config} builds an untrained model; add --random-init to run it anyway "
                        "(its output is meaningless) or give --checkpoint")
    print(f"\n*** WARNING: {RANDOM_INIT_WARNING} ***\n", file=sys.stderr, flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Predictor.from_config(args.config, overrides, device=args.device, **thresholds)


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"avseg predict: warning: {message}", file=sys.stderr, flush=True)


def run_cli(args: argparse.Namespace) -> int:
    videos, overrides = _split_inputs(args.inputs)
    for item in args.random_init or ():
        if not OVERRIDE_PATTERN.match(item):
            raise UserError(f"--random-init {item}: expected a dotted config override KEY=VALUE "
                            "(e.g. data.image_size=64); put videos before the options")
        overrides.append(item)
    if not videos:
        raise UserError("no video given")
    if not args.fps > 0:
        raise UserError(f"--fps {args.fps}: must be a positive number of frames per second")
    if (args.window is not None and args.window < 1) or args.batch < 1:
        raise UserError(f"--window ({args.window}) and --batch ({args.batch}) must be at least 1")
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
    predictor = build_predictor(args, overrides)
    for video, out in ready:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                warnings.showwarning = _print_warning
                report = predictor.predict_video(
                    video, out, fps=args.fps, every_frame=args.every_frame, window=args.window,
                    batch=args.batch, allow_silent=args.allow_silent, overlay=not args.no_overlay,
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
