"""Describe a model: parameters per part, FLOPs, output shapes and time of one forward on random
input (`avseg model-info`, whose command line is avseg.bench.model_info)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from avseg.audio.logmel import NUM_BANDS, NUM_FRAMES
from avseg.config import Config

VGGISH_INPUT = (NUM_FRAMES, NUM_BANDS)  # one frame's VGGish log-mel example: the default audio input

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
    audio_shape: tuple[int, ...] = VGGISH_INPUT


def random_inputs(config: Config, batch: int, frames: int, audio_shape: tuple[int, ...] = VGGISH_INPUT) -> dict:
    """Random frames and audio of one batch. audio_shape: one frame's audio input (the front
    end's: `inference.audio_input.AudioRule.input_shape`; VGGish's `VGGISH_INPUT` by default)."""
    size = config.data.image_size
    inputs = {
        "frames": torch.randn(batch, frames, 3, size, size),
        "log_mel": torch.randn(batch, frames, *audio_shape),
        "frame_present": torch.ones(batch, frames, dtype=torch.bool),
    }
    if config.model.qsd.separator:
        inputs["waveform"] = torch.randn(batch, frames * 16000) * 0.1
    return inputs


def _core(model: nn.Module) -> nn.Module:
    return getattr(model, "baseline", model)  # the TD wrapper holds the baseline


def describe(model: nn.Module, config: Config, *, batch: int = 1, frames: int = 5,
             device: str | torch.device = "cpu", audio_shape: tuple[int, ...] = VGGISH_INPUT) -> ModelInfo:
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
    inputs = {k: v.to(device) for k, v in random_inputs(config, batch, frames, audio_shape).items()}
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
    return ModelInfo(parts, total, gflops, shapes, elapsed, tuple(audio_shape))


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
        f"input {frames} frames x {config.data.image_size} px, audio {list(info.audio_shape)} per frame",
        f"{'part':<16}{'params':>14}{'trainable':>14}",
    ]
    lines += [f"{name:<16}{total:>14,}{trainable:>14,}" for name, total, trainable in info.parts]
    lines.append(f"{'total':<16}{info.total[0]:>14,}{info.total[1]:>14,}")
    lines.append(f"GFLOPs per clip: {info.gflops:.2f}   forward: {info.forward_ms:.0f} ms ({device}, one clip)")
    lines += [f"output {key}: {list(shape)}" for key, shape in info.outputs.items()]
    return "\n".join(lines)
