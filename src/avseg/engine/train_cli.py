"""`avseg train CONFIG [key=value ...] [--resume CKPT|auto]`: the command around `avseg.engine.train.train`."""

from __future__ import annotations

import os
import sys
import warnings

from avseg.config import load_config
from avseg.engine.evaluate import add_precision_arguments, precision_overrides
from avseg.engine.train import BEST, LAST, train


def add_cli_arguments(parser) -> None:
    parser.add_argument("config", help="YAML config (configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. train.epochs=2 data.root=data/s4")
    parser.add_argument("--resume", metavar="CKPT|auto",
                        help="continue from a checkpoint's exact state; 'auto' = OUTPUT_DIR/last.pt if it exists")
    parser.add_argument("--allow-import", action="store_true",
                        help="honour a package.module:factory model.qsd.separator in CONFIG (imports that code)")
    add_precision_arguments(parser)
    parser.epilog = ("Multi-GPU: torchrun --nproc_per_node N -m avseg.cli train CONFIG ...; "
                     "see docs/training.md (multi-node, AMP, determinism, CAVP pairing).")


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"avseg train: warning: {message}", file=sys.stderr, flush=True)


def run_cli(args) -> int:
    config = load_config(args.config, [*args.overrides, *precision_overrides(args)])
    with warnings.catch_warnings():
        warnings.showwarning = _print_warning  # one line each, also in DataLoader workers (forked)
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        summary = train(config, resume=args.resume, allow_import=args.allow_import)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    if summary.get("best_metric") is not None:
        print(f"best val {summary['main_metric']} = {summary['best_metric']:.4f} at step {summary['best_step']} "
              f"({summary['output_dir']}/{BEST})")
    print(f"trained {summary['steps']} steps ({summary['epochs']} epochs); last checkpoint "
          f"{summary['output_dir']}/{LAST}")
    return 0
