"""`avseg bench SUITE`: the benchmark suites."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from avseg.data.layouts import LAYOUTS
from avseg.errors import UserError


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


class _IntermixedParser(argparse.ArgumentParser):
    """A suite's parser: positional arguments may stand before and after the options
    (`avseg bench train CONFIG --steps 3 data.image_size=112`), which plain argparse refuses."""

    _parsing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._parsing:  # parse_known_intermixed_args calls back in here (Python < 3.13)
            return super().parse_known_args(args, namespace)
        self._parsing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._parsing = False


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    suites = parser.add_subparsers(dest="suite", metavar="SUITE", required=True, parser_class=_IntermixedParser)
    speed = suites.add_parser("speed", help="inference speed and memory: backbone, QSD, Table-2 rows, TPAVI",
                              description="Inference speed and memory, side by side, one subprocess per row.")
    speed.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
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
                    "of a training step of --config at the same image size (target: 2 workers >= 3x).")
    data.add_argument("--workers", default="0,1,2", help="comma-separated DataLoader worker counts (default 0,1,2)")
    data.add_argument("--clips", type=int, help="synthetic clips (default: as many as the timed batches need)")
    data.add_argument("--layout", choices=LAYOUTS,
                      help="synthetic layout (default: the data set of --config)")
    data.add_argument("--batches", type=int, default=20, help="timed batches per worker count (default 20)")
    data.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (loader and training)")
    data.add_argument("--config", help="the training config: its loader settings and its step rate (default "
                                       "configs/qsd_r50_LAYOUT.yaml, LAYOUT avss unless given; random init)")
    _add_step_options(data, steps=3, warmup=1, image_size=224)
    _add_common(data)


def _add_predict(suites) -> None:
    predict = suites.add_parser(
        "predict", help="avseg predict on videos of given lengths: real-time factor and peak memory",
        description="Writes synthetic test videos (with sound) of the given lengths, runs the predict path "
                    "(avseg.Predictor.predict_video, masks, overlay and json written) on each in its own "
                    "subprocess and reports wall time, real-time factor, frames and peak resident memory.")
    predict.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (with --config)")
    predict.add_argument("--seconds", default="10,60", help="comma-separated video lengths (default 10,60)")
    predict.add_argument("--modes", default="1fps,dense",
                         help="comma-separated: 1fps (the default of avseg predict), Nfps, dense (every frame)")
    predict.add_argument("--config", help="config of an untrained model (with --random-init; default "
                                          "configs/qsd_r50_avss.yaml)")
    predict.add_argument("--random-init", action="store_true", help="with --config: random weights")
    predict.add_argument("--checkpoint", help="a trained avseg checkpoint instead")
    predict.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    predict.add_argument("--video-size", default="320x240", help="test video WIDTHxHEIGHT (default 320x240)")
    predict.add_argument("--no-overlay", action="store_true", help="do not write overlay.mp4")
    predict.add_argument("--json", type=Path, help="also write the rows as JSON here")


def _add_step_options(parser: argparse.ArgumentParser, *, steps: int, warmup: int, image_size: int | None) -> None:
    """The options of a measured training step (train, and data's comparison)."""
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device of the training steps")
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
