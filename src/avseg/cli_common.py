"""The one grammar of the `avseg` commands: `avseg COMMAND CONFIG [key=value ...] [--options]`.

Shared by every command module: CONFIG and its dotted overrides as positional arguments (they may
stand before, between and after the options), `--device` (default "auto": CUDA when available,
else the CPU), `--batch-size`, `--no-progress`, `--random-init` as a plain flag, and the old
spellings (`--config`, `--batch`, `--quiet`) kept one release as aliases that print a warning.
docs/cli.md lists every command.
"""

from __future__ import annotations

import argparse
import sys

from avseg.config import OVERRIDE_PATTERN
from avseg.errors import UserError

DEVICE_HELP = "auto (default: cuda if available, else cpu), cpu, cuda, cuda:1, ..."
CONFIG_SUFFIXES = (".yaml", ".yml")


class IntermixedParser(argparse.ArgumentParser):
    """Positional arguments may stand before and after the options (`avseg train CONFIG --resume
    auto train.epochs=2`), which plain argparse refuses; a parser with sub-commands parses as usual."""

    _parsing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._parsing or self._subparsers is not None:  # parse_known_intermixed_args calls back in here
            return super().parse_known_args(args, namespace)
        self._parsing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._parsing = False


def warn_deprecated(old: str, new: str) -> None:
    """One line on stderr: the old spelling still works this release."""
    print(f"avseg: warning: {old} is deprecated and will be removed in the next release; use {new}",
          file=sys.stderr, flush=True)


class _DeprecatedOption(argparse.Action):
    """An old option name: stores into the new option's dest and warns."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        warn_deprecated(option_string, self.new)
        setattr(namespace, self.dest, True if self.nargs == 0 else values)


def add_alias(parser: argparse.ArgumentParser, old: str, new: str, dest: str, *, flag: bool = False,
              type=None) -> None:
    """`old` as a hidden, warned alias of the option `new` (same dest)."""
    kwargs = {"nargs": 0} if flag else {"type": type}
    parser.add_argument(old, dest=dest, action=_DeprecatedOption, new=new, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS, **kwargs)


def add_config_arguments(parser: argparse.ArgumentParser, *, required: bool = True, help: str = "YAML config",
                         config_alias: bool = False) -> None:
    """CONFIG [key=value ...] (positional; CONFIG optional unless `required`); with `config_alias`,
    the old `--config CFG` too (warned). Read them back with `config_and_overrides(args)`."""
    metavar = "CONFIG [key=value ...]" if required else "[CONFIG] [key=value ...]"
    parser.add_argument("items", nargs="*", metavar=metavar,
                        help=f"{help}, then dotted config overrides, e.g. data.image_size=112")
    parser.set_defaults(config=None, _config_required=required)
    if config_alias:
        add_alias(parser, "--config", "the CONFIG positional argument", "config")


def add_device_argument(parser: argparse.ArgumentParser, default: str | None = "auto", help: str = DEVICE_HELP) -> None:
    parser.add_argument("--device", default=default, help=help)


def add_batch_size_argument(parser: argparse.ArgumentParser, default, help: str, *, old: str | None = None) -> None:
    parser.add_argument("--batch-size", type=int, default=default, help=help)
    if old:
        add_alias(parser, old, "--batch-size", "batch_size", type=int)


def add_progress_argument(parser: argparse.ArgumentParser, help: str = "no progress bar", *,
                          old: str | None = None) -> None:
    parser.add_argument("--no-progress", action="store_true", help=help)
    if old:
        add_alias(parser, old, "--no-progress", "no_progress", flag=True)


def split_items(items: list[str]) -> tuple[list[str], list[str]]:
    """Positional arguments as (paths, dotted KEY=VALUE overrides); an existing file is a path."""
    from pathlib import Path

    paths, overrides = [], []
    for item in items:
        (overrides if OVERRIDE_PATTERN.match(item) and not Path(item).exists() else paths).append(item)
    return paths, overrides


def config_and_overrides(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """(CONFIG or None, overrides) of `add_config_arguments`; UserError for a stray path or a missing CONFIG."""
    config, overrides, _ = config_overrides_paths(args, other_paths=False)
    return config, overrides


def config_overrides_paths(args: argparse.Namespace, *, other_paths: bool) -> tuple[str | None, list[str], list[str]]:
    """(CONFIG or None, overrides, other paths). With `other_paths` (predict's old list of videos),
    CONFIG is the first path only when it is a YAML file and the others are returned."""
    paths, overrides = split_items(list(getattr(args, "items", None) or []))
    config = args.config
    if config is not None and paths and paths[0].endswith(CONFIG_SUFFIXES):
        raise UserError(f"two configs: {paths[0]} and --config {config}; give CONFIG once, as the first argument")
    if config is None and paths and (not other_paths or paths[0].endswith(CONFIG_SUFFIXES)):
        config, paths = paths[0], paths[1:]
    if paths and not other_paths:
        raise UserError(f"unexpected argument {paths[0]}: expected CONFIG, then config overrides KEY=VALUE")
    if config is None and args._config_required:
        raise UserError("no config: give CONFIG (a YAML file, e.g. configs/qsd_r50_s4.yaml) as the first argument")
    return (str(config) if config is not None else None), overrides, paths


def resolve_device_name(name: str) -> str:
    """"auto" -> "cuda" when a CUDA device is available, else "cpu"; any other name as given."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
