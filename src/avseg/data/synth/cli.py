"""`avseg synth`: the command-line face of `generate` (parsing only; the work is in generate.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from avseg.data.layouts import LAYOUTS
from avseg.data.synth.config import SynthConfig, tier_config
from avseg.data.synth.generate import generate
from avseg.errors import UserError


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layout", required=True, choices=LAYOUTS, help="official layout to write")
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder (S4: the Single-source level; MS3: Multi-sources; AVSS: "
                             "AVSBench_semantic); must be empty, new, or an earlier synth output")
    parser.add_argument("--clips", type=int, default=100, help="number of clips (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument("--image-size", type=int, default=224, help="frame size in pixels (default 224)")
    parser.add_argument("--num-classes", type=int, default=12,
                        help="classes in the bank (default 12; at most 70 for avss, 480 otherwise)")
    parser.add_argument("--tier", default=None, choices=("easy", "medium", "hard"),
                        help="difficulty tier: SNR 10 / 0 / -5 dB, 2-5 objects, 1-4 simultaneous sources, "
                             "off-screen sounds in 25%% of the clips (docs/synth.md); other options override it")
    parser.add_argument("--objects", default=None, metavar="MIN,MAX",
                        help="objects per scene, sounding and silent (default 2,4)")
    parser.add_argument("--max-sources", type=int, default=None,
                        help="most source objects of a multi-source clip (default: all but one object)")
    parser.add_argument("--offscreen-share", type=float, default=None, metavar="SHARE",
                        help="share of clips with an off-screen sound, heard and never labelled (default 0)")
    parser.add_argument("--multi-source-share", type=float, default=None, metavar="SHARE",
                        help="share of multi-source clips in MS3 (default 1.0) and AVSS v2 (default 0.5); "
                             "S4 and AVSS v1s are single-source, v1m multi-source")
    parser.add_argument("--snr-db", default=None, metavar="MIN,MAX",
                        help="SNR of one source over the background noise, dB (default 0,20)")
    parser.add_argument("--frames", type=int, default=None,
                        help="frames (= seconds) per clip: 5 for s4/ms3; avss: 5 = subsets v1s,v1m, 10 = v2")
    parser.add_argument("--avss-subsets", default=None, metavar="LIST",
                        help="AVSS subsets to write, e.g. v1s,v1m,v2 (default all three, or as --frames says)")
    parser.add_argument("--split", default="0.7,0.15,0.15", metavar="TRAIN,VAL,TEST",
                        help="split shares (default 0.7,0.15,0.15)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes (default min(2, cpus)); never changes the output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _numbers(option: str, text: str, count: int, kind=float) -> tuple:
    parts = [part.strip() for part in str(text).split(",")]
    try:
        values = tuple(kind(part) for part in parts)
    except ValueError:
        values = ()
    if len(values) != count:
        what = "integers" if kind is int else "numbers"
        raise UserError(f"{option} expects {count} comma-separated {what}, got {text!r}")
    return values


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    """Parsed options -> SynthConfig (raises UserError for malformed lists)."""
    subsets = None
    if args.avss_subsets is not None:
        subsets = tuple(part.strip() for part in args.avss_subsets.split(",") if part.strip())
    options = dict(
        seed=args.seed, clips=args.clips, image_size=args.image_size, num_classes=args.num_classes,
        multi_source_share=args.multi_source_share, frames=args.frames, avss_subsets=subsets,
        split=_numbers("--split", args.split, 3), workers=args.workers,
    )
    if args.objects is not None:
        options["objects"] = _numbers("--objects", args.objects, 2, int)
    if args.snr_db is not None:
        options["snr_db"] = _numbers("--snr-db", args.snr_db, 2)
    if args.max_sources is not None:
        options["max_sources"] = args.max_sources
    if args.offscreen_share is not None:
        options["offscreen_share"] = args.offscreen_share
    return tier_config(args.tier, **options) if args.tier else SynthConfig(**options)


def run_cli(args: argparse.Namespace) -> int:
    summary = generate(args.layout, args.out, config_from_args(args), progress=not args.no_progress)
    print(f"avseg synth: {summary.line()}")
    return 0
