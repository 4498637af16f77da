"""The `avseg` command line: thin; each subcommand lives in the module that does the work.

Every command module exposes `add_cli_arguments(parser)` and `run_cli(args) -> int`. Modules are
imported only when their command runs, so `avseg --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from avseg import __version__
from avseg.cli_common import IntermixedParser
from avseg.errors import UserError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("avseg.data.synth.cli", "generate the synthetic audio-visual benchmark in an official layout"),
    "check-data": ("avseg.data.check", "check every clip of a data set folder and report damaged files"),
    "build-vpo": ("avseg.data.vpo_build", "build the VPO csvs from a local COCO and VGGSound"),
    "model-info": ("avseg.bench.model_info", "build a model from a config and report parameters, FLOPs, shapes, time"),
    "pretrain-audio": ("avseg.engine.audio_pretrain", "pretrain the small audio encoder on audio tagging (CPU configs)"),
    "train": ("avseg.engine.train_cli", "train a model (one process, or DDP under torchrun); resumable exactly"),
    "convert-tpavi": ("avseg.engine.convert_tpavi", "convert an official AVSBench TPAVI checkpoint into an avseg checkpoint"),
    "eval": ("avseg.engine.evaluate", "evaluate a checkpoint on a split: metrics.json, per_class.csv, masks"),
    "predict": ("avseg.inference.cli", "segment the sounding objects of videos of any length (masks, overlay, json)"),
    "study": ("avseg.study.cli", "the paper's claims tested: Table-2 rows x seeds on the synthetic benchmark, SNR sweep, t-SNE"),
    "export": ("avseg.inference.export", "export QSD / TPAVI to ONNX, verified with ONNX Runtime against PyTorch"),
    "report": ("avseg.report.cli", "build the HTML report of a training run (metrics vs baselines, figures)"),
    "bench": ("avseg.bench.cli", "benchmarks: model speed side by side, training throughput, data loading, prediction speed and memory"),
    "app": ("avseg.app.cli", "a local web page: upload a video, see and download its segmentation"),
}


def _load(module_name: str):
    return importlib.import_module(module_name)


def parse(argv: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The parser and the parsed arguments of `avseg ARGV` (only the named command's module is imported)."""
    parser = argparse.ArgumentParser(
        prog="avseg",
        description="Audio-visual segmentation toolkit: QSD, CAVP, AVSBench and VPO.",
    )
    parser.add_argument("--version", action="version", version=f"avseg {__version__}")
    # every command: `avseg COMMAND [CONFIG] [key=value ...] [--options]`, in any order (avseg.cli_common)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=IntermixedParser)
    requested = next((arg for arg in argv if arg in COMMANDS), None)
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name == requested:
            _load(module_name).add_cli_arguments(command)
            command.set_defaults(_run=_load(module_name).run_cli)
    return parser, parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parser, args = parse(list(sys.argv[1:] if argv is None else argv))
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except UserError as err:
        print(f"avseg {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a read-only or unwritable path met outside the checks above
        where = f"{err.filename}: " if err.filename else ""
        print(f"avseg {args.command}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"avseg {args.command}: interrupted", file=sys.stderr)
        return 130


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a table cell: escape the column separator


def _default(action: argparse.Action) -> str:
    """"required", the default value, or "" where there is none to show (None, False, [])."""
    if action.required and action.option_strings:
        return "required"
    value = action.default
    if value is None or value is False or value == [] or value == argparse.SUPPRESS:
        return ""
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _describe(parser: argparse.ArgumentParser, title: str, lines: list[str]) -> None:
    """Markdown of one parser: its description and a table of its arguments (help expanded)."""
    formatter = parser._get_formatter()
    lines += [f"## `{title}`", ""]
    if parser.description:
        lines += [parser.description, ""]
    rows, nested = [], []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue  # -h, and the old spellings kept for one release (docs/cli.md)
        if isinstance(action, argparse._SubParsersAction):
            nested += [(f"{title} {name}", sub) for name, sub in action.choices.items()]
            continue
        if action.option_strings:
            name = ", ".join(action.option_strings)
            if action.nargs != 0:
                name += " " + formatter._format_args(action, action.dest.upper())
        else:
            name = formatter._format_args(action, action.dest)
        text = formatter._expand_help(action) if action.help else ""
        rows.append(f"| `{_cell(name)}` | {_cell(_default(action))} | {_cell(text)} |")
    if rows:
        lines += ["| argument | default | what it does |", "| --- | --- | --- |", *rows, ""]
    for sub_title, sub in nested:
        _describe(sub, sub_title, lines)


def reference() -> str:
    """docs/cli-reference.md: every command's arguments with their help, read from the parsers
    themselves (`python scripts/cli_reference.py` writes it; a test checks it is current)."""
    lines = ["# Command reference", "",
             "Generated from the parsers by `python scripts/cli_reference.py`; `avseg COMMAND --help` prints the",
             "same. The grammar shared by every command is in docs/cli.md.", ""]
    for name, (module_name, help_text) in COMMANDS.items():
        parser = IntermixedParser(prog=f"avseg {name}", description=help_text)
        _load(module_name).add_cli_arguments(parser)
        _describe(parser, f"avseg {name}", lines)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.exit(main())
