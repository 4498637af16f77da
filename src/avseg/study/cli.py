"""`avseg study SPEC [key=value ...] --out DIR`: run, resume or re-aggregate a study (docs/study.md)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from avseg.errors import UserError
from avseg.study.spec import load_spec


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", type=Path, help="a study spec YAML (configs/study/*.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="spec overrides, e.g. seeds=[0,1] schedule.epochs=4")
    parser.add_argument("--out", type=Path, required=True,
                        help="study folder; the same command resumes a killed study there")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                        help="train.device of every run (default: the base config's, auto: cuda if available)")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="train N runs at once, each in its own process with 1/N of the threads "
                             "(on a small CPU, 2 one-thread runs finish sooner than 1 two-thread run)")
    parser.add_argument("--rows", metavar="ROW,ROW",
                        help="train only these rows of the spec (comma-separated; the report still covers "
                             "every finished run)")
    parser.add_argument("--report-only", action="store_true",
                        help="only re-aggregate the finished runs into results.json / results.md / report.html")
    parser.add_argument("--export", type=Path, metavar="DIR",
                        help="after the run (or the report), copy the study's small record files into DIR "
                             "(what re-aggregates it, and what a copy back into --out resumes from; no checkpoints)")


def run_cli(args: argparse.Namespace) -> int:
    from avseg.study.aggregate import write_results
    from avseg.study.parallel import run_study_parallel
    from avseg.study.runner import machine

    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: expected 1 or more")
    spec = load_spec(args.spec, [*args.overrides, *([f"device={args.device}"] if args.device else [])])
    started = time.perf_counter()
    if args.report_only:
        results = write_results(spec, args.out, machine=machine())
    else:
        rows = [name.strip() for name in args.rows.split(",") if name.strip()] if args.rows else None
        results = run_study_parallel(spec, args.out, jobs=args.jobs, rows=rows,
                                     log=lambda message: print(message, flush=True))
    if args.export is not None:
        from avseg.study.aggregate import export_record

        copied = export_record(args.out, args.export)
        print(f"avseg study: {copied} record files copied to {args.export}")
    print(f"avseg study: {results['runs_finished']}/{results['runs_total']} runs in {args.out} "
          f"({(time.perf_counter() - started) / 60:.1f} min); {args.out / 'results.md'}, {args.out / 'report.html'}")
    return 0
