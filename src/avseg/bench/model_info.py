"""`avseg model-info CONFIG`: build a model, run one forward on random input of the config's
audio front end (VGGish `[96, 64]`, CAVP's 1 s chunk or 3 s clip), and describe it."""

from __future__ import annotations

import argparse

from avseg.config import load_config
from avseg.models.info import describe, format_info


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config (e.g. configs/qsd_r50_s4.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.qsd.num_tokens=3")
    parser.add_argument("--frames", type=int, default=5, help="frames per clip of the random input (default 5)")
    parser.add_argument("--random-init", action="store_true",
                        help="ignore the weight files named in the config (random backbone and VGGish)")
    parser.add_argument("--allow-import", action="store_true",
                        help="honour a package.module:factory model.qsd.separator in CONFIG (imports that code)")
    parser.add_argument("--device", default="auto",
                        help="device of the timed forward pass: auto (default: cuda if available, else cpu), cpu, cuda")


def run_cli(args: argparse.Namespace) -> int:
    from avseg.inference.audio_input import audio_rule
    from avseg.inference.predictor import resolve_device
    from avseg.models.build import build_model

    overrides = list(args.overrides)
    if args.random_init:
        overrides += ["model.backbone_weights=", "audio.vggish_weights="]
    config = load_config(args.config, overrides)
    model = build_model(config, allow_import=args.allow_import)
    device = resolve_device(args.device)
    info = describe(model, config, frames=args.frames, device=device, audio_shape=audio_rule(config).input_shape)
    print(format_info(info, config, args.frames, device=str(device)))
    return 0
