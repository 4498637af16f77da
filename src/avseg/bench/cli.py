"""`avseg bench SUITE`: the benchmark suites."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from avseg.cli_common import IntermixedParser, add_config_arguments, add_device_argument, resolve_device_name
from avseg.data.layouts import LAYOUTS
from avseg.errors import UserError

DEVICE_HELP = "device of the measured runs: auto (default: cuda if available, else cpu), cpu or cuda"


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    suites = parser.add_subparsers(dest="suite", metavar="SUITE", required=True, parser_class=IntermixedParser)
    speed = suites.add_parser("speed", help="inference speed and memory: backbone, QSD, Table-2 rows, TPAVI",
                              description="Inference speed and memory, side by side, one subprocess per row.")
    add_device_argument(speed, help=DEVICE_HELP)
    speed.add_argument("--backbones", type=_list, default=["r50", "swint", "pvtb2"], help="comma-separated (default r50,swint,pvtb2)")
    from avseg.bench.speed import ROWS

    speed.add_argument("--rows", type=_list, default=list(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    speed.add_argument("--frames", type=int, default=5)
    speed.add_argument("--runtime", type=_list, default=["torch"],
                       help="comma-separated runtimes, side by side: torch (eager PyTorch), onnx (the model exported "
                            "by avseg export, run by ONNX Runtime on the CPU); default torch")
    speed.add_argument("--image-size", type=int, default=224)
    speed.add_argument("--repeats", type=int, default=5, help="timed passes per row (median reported)")
    speed.add_argument("--warmup", type=int, default=1)
    speed.add_argument("--json", type=Path, help="also write the rows as JSON here")
    speed.add_argument("--no-isolate", action="store_true", help="measure in this process (peak memory then accumulates)")
    speed.add_argument("overrides", nargs="*", help="config overrides for every row, e.g. model.d_model=128")
    _add_train(suites)
    _add_data(suites)
    _add_predict(suites)


def _add_train(suites) -> None:
    from avseg.bench.train import AMP_MODES, DEFAULT_CONFIGS

    train = suites.add_parser(
        "train", help="time per training step; projected epoch and schedule on S4, MS3, AVSS",
        description="Time per training optimizer step (forward, losses, backward, AdamW) on synthetic batches "
                    "of each config's shape, one subprocess per config; projected time of an epoch and of the "
                    "config's schedule at the real train-split sizes. Weight files are replaced by random init.")
    train.add_argument("items", nargs="*", metavar="CONFIG|KEY=VALUE",
                       help=f"configs (default {' '.join(DEFAULT_CONFIGS)}), then config overrides for every row")
    _add_step_options(train, steps=10, warmup=2, image_size=None)
    train.add_argument("--batch-size", type=int, help="clips per step (default: the config's data.batch_size)")
    train.add_argument("--amp", default="none", choices=AMP_MODES, help="autocast dtype: bf16 (CUDA and CPU), fp16 (CUDA only, with a GradScaler)")
    train.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA; the CPU needs a C compiler)")
    _add_common(train)


def _add_data(suites) -> None:
    data = suites.add_parser(
        "data", help="DataLoader throughput per worker count against the training step rate",
        description="Writes a small synthetic set (avseg synth) in a temporary folder, measures the clips/s "
                    "of the project's training DataLoader for each worker count, and divides it by the clips/s "
                    "of a training step of CONFIG at the same image size (target: 2 workers >= 3x).")
    data.add_argument("--workers", default="0,1,2", help="comma-separated DataLoader worker counts (default 0,1,2)")
    data.add_argument("--clips", type=int, help="synthetic clips (default: as many as the timed batches need)")
    data.add_argument("--layout", choices=LAYOUTS,
                      help="synthetic layout (default: the data set of CONFIG)")
    data.add_argument("--batches", type=int, default=20, help="timed batches per worker count (default 20)")
    add_config_arguments(data, required=False, config_alias=True,
                         help="the training config: its loader settings and its step rate (default "
                              "configs/qsd_r50_LAYOUT.yaml, LAYOUT avss unless given; random init)")
    _add_step_options(data, steps=3, warmup=1, image_size=224)
    _add_common(data)


def _add_predict(suites) -> None:
    predict = suites.add_parser(
        "predict", help="avseg predict on videos of given lengths: real-time factor and peak memory",
        description="Writes synthetic test videos (with sound) of the given lengths, runs the predict path "
                    "(avseg.Predictor.predict_video, masks, overlay and json written) on each in its own "
                    "subprocess and reports wall time, real-time factor, frames and peak resident memory.")
    add_config_arguments(predict, required=False, config_alias=True,
                         help="config of an untrained model (with --random-init; default configs/qsd_r50_avss.yaml)")
    predict.add_argument("--seconds", default="10,60", help="comma-separated video lengths (default 10,60)")
    predict.add_argument("--modes", default="1fps,dense",
                         help="comma-separated: 1fps (the default of avseg predict), Nfps, dense (every frame)")
    predict.add_argument("--random-init", action="store_true", help="with CONFIG: random weights")
    predict.add_argument("--checkpoint", help="a trained avseg checkpoint instead")
    add_device_argument(predict)
    predict.add_argument("--video-size", default="320x240", help="test video WIDTHxHEIGHT (default 320x240)")
    predict.add_argument("--no-overlay", action="store_true", help="do not write overlay.mp4")
    predict.add_argument("--json", type=Path, help="also write the rows as JSON here")


def _add_step_options(parser: argparse.ArgumentParser, *, steps: int, warmup: int, image_size: int | None) -> None:
    """The options of a measured training step (train, and data's comparison)."""
    add_device_argument(parser, help=DEVICE_HELP)
    parser.add_argument("--steps", type=int, default=steps, help=f"timed training steps (median; default {steps})")
    parser.add_argument("--warmup", type=int, default=warmup,
                        help=f"untimed training steps first (default {warmup}; torch.compile compiles in them)")
    parser.add_argument("--image-size", type=int, default=image_size,
                        help=f"frame size in px (default {image_size or 'the config data.image_size'})")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--no-isolate", action="store_true",
                        help="measure training in this process (peak memory then accumulates)")


def run_cli(args: argparse.Namespace) -> int:
    args.device = resolve_device_name(args.device)
    if args.suite == "speed":
        from avseg.bench.common import write_rows
        from avseg.bench.speed import format_speed_table, run_speed

        if args.repeats < 1 or args.frames < 1:
            raise UserError("--repeats and --frames must be >= 1")
        rows = run_speed(args.backbones, args.rows, isolate=not args.no_isolate, device=args.device,
                         frames=args.frames, image_size=args.image_size, repeats=args.repeats,
                         warmup=args.warmup, overrides=list(args.overrides), runtimes=args.runtime,
                         progress=lambda r: print(f"  {r.model} / {r.backbone} / {r.runtime}: {r.ms_per_clip:.1f} ms",
                                                  flush=True))
        print(format_speed_table(rows))
        write_rows(args.json, rows)
        return 0
    if args.suite in ("train", "data", "predict"):
        module = importlib.import_module(f"avseg.bench.{args.suite}")
        return module.run_cli(args)
    raise UserError(f"unknown bench suite {args.suite}")
