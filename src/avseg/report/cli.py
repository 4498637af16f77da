"""`avseg report RUN_DIR`: build the HTML report of a training run."""

from __future__ import annotations

import argparse
from pathlib import Path

from avseg.cli_common import add_device_argument, resolve_device_name


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="output_dir of an `avseg train` run (holds best.pt / last.pt, log.jsonl)")
    parser.add_argument("--checkpoint", type=Path, help="checkpoint to report on (default: RUN_DIR/best.pt, else last.pt)")
    parser.add_argument("--split", default="test", help="split to evaluate (default test)")
    parser.add_argument("--out", type=Path, help="where to write the page (default RUN_DIR/report.html)")
    add_device_argument(parser)


def run_cli(args: argparse.Namespace) -> int:
    from avseg.report.build import build_report

    path, summary = build_report(args.run_dir, checkpoint=args.checkpoint, split=args.split, out=args.out,
                                 device=resolve_device_name(args.device))
    main = summary["model"]["main_metric"]
    print(f"test {main}: {summary['model'][main]:.4f}; baselines: "
          + ", ".join(f"{name} {result[main]:.4f}" for name, result in summary["baselines"].items()))
    if not summary["beats_baselines"]:
        print("warning: the model does not beat every trivial baseline")
    print(f"report: {path.resolve()}")
    return 0
