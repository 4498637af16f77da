"""`avseg model-info CONFIG`: build a model, run one forward on random input, and describe it."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from avseg.config import Config, load_config

PARTS = (
    "backbone", "encoder", "audio_encoder", "audio_proj", "audio_tf", "audio_tag_head", "fusion", "global_asd",
    "quantizer", "recombination", "local_asd", "fpn", "mask_decoder", "query_pos", "project", "tpavi", "decoder", "head",
    "aspp", "reduce", "projector", "classifier",  # CAVP (its audio network is `audio_encoder`, its fusion `fusion`)
)


@dataclass
class ModelInfo:
    parts: list[tuple[str, int, int]]  # (part, total parameters, trainable parameters)
    total: tuple[int, int]
    gflops: float
    outputs: dict[str, tuple[int, ...]]
    forward_ms: float


def random_inputs(config: Config, batch: int, frames: int) -> dict:
    size = config.data.image_size
    inputs = {
        "frames": torch.randn(batch, frames, 3, size, size),
        "log_mel": torch.randn(batch, frames, 96, 64),
        "frame_present": torch.ones(batch, frames, dtype=torch.bool),
    }
    if config.model.qsd.separator:
        inputs["waveform"] = torch.randn(batch, frames * 16000) * 0.1
    return inputs


def _core(model: nn.Module) -> nn.Module:
    return getattr(model, "baseline", model)  # the TD wrapper holds the baseline


def describe(model: nn.Module, config: Config, *, batch: int = 1, frames: int = 5,
             device: str | torch.device = "cpu") -> ModelInfo:
    """Parameters per part, FLOPs and output shapes of one forward pass on random input on `device`."""
    core = _core(model)
    parts = []
    for name in PARTS:
        part = getattr(core, name, None)
        if isinstance(part, nn.Module):
            params = list(part.parameters())
            parts.append((name, sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)))
    all_params = list(model.parameters())
    total = (sum(p.numel() for p in all_params), sum(p.numel() for p in all_params if p.requires_grad))
    device = torch.device(device)
    inputs = {k: v.to(device) for k, v in random_inputs(config, batch, frames).items()}
    model.to(device).eval()
    gflops = count_gflops(model, inputs)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda _: None)
    with torch.no_grad():
        sync(device)
        start = time.perf_counter()
        outputs = model(**inputs)
        sync(device)
        elapsed = (time.perf_counter() - start) * 1000
    shapes = {k: tuple(v.shape) for k, v in outputs.items() if torch.is_tensor(v)}
    return ModelInfo(parts, total, gflops, shapes, elapsed)


def count_gflops(model: nn.Module, inputs: dict) -> float:
    """GFLOPs of one forward pass (`torch.utils.flop_counter`; a multiply-add counts as 2)."""
    counter = FlopCounterMode(display=False)
    with counter:  # with autograd on: the counter's module tracker needs it (no backward is run)
        model(**inputs)
    return counter.get_total_flops() / 1e9


def format_info(info: ModelInfo, config: Config, frames: int, device: str = "cpu") -> str:
    m = config.model
    lines = [
        f"model {m.name}  backbone {m.backbone}  classes {m.num_classes}  "
        f"input {frames} frames x {config.data.image_size} px",
        f"{'part':<16}{'params':>14}{'trainable':>14}",
    ]
    lines += [f"{name:<16}{total:>14,}{trainable:>14,}" for name, total, trainable in info.parts]
    lines.append(f"{'total':<16}{info.total[0]:>14,}{info.total[1]:>14,}")
    lines.append(f"GFLOPs per clip: {info.gflops:.2f}   forward: {info.forward_ms:.0f} ms ({device}, one clip)")
    lines += [f"output {key}: {list(shape)}" for key, shape in info.outputs.items()]
    return "\n".join(lines)


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
    from avseg.models.build import build_model

    overrides = list(args.overrides)
    if args.random_init:
        overrides += ["model.backbone_weights=", "audio.vggish_weights="]
    config = load_config(args.config, overrides)
    model = build_model(config, allow_import=args.allow_import)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device.replace("auto", "cpu")
    info = describe(model, config, frames=args.frames, device=device)
    print(format_info(info, config, args.frames, device=str(device)))
    return 0
