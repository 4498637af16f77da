"""Mixed precision and compilation, the same code on the CPU and on GPUs.

    amp    autocast dtype: "none"; "bf16" on CUDA and on the CPU (PyTorch's CPU autocast supports
           bfloat16); "fp16" on CUDA only, with a GradScaler (the CPU has no fp16 autocast worth
           using, and the scaler only matters for fp16's narrow range)
    compile  `torch.compile` (inductor) of the model: on CUDA, and on the CPU where a C compiler
           is on the PATH (inductor writes C++ and builds it with it)

`avseg train` (`train.amp`, `train.compile`), `avseg eval` and `avseg bench train` take their
precision and compilation from here, so the GPU branches run in the CPU tests too.
"""

from __future__ import annotations

import shutil
from contextlib import nullcontext

import torch
from torch import nn

from avseg.errors import UserError

AMP_MODES = ("none", "bf16", "fp16")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
C_COMPILERS = ("cc", "gcc", "clang")


def amp_dtype(amp: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of `amp` on `device` (None: full precision); UserError for what cannot run."""
    if amp not in AMP_MODES:
        raise UserError(f"amp '{amp}': expected one of {', '.join(AMP_MODES)}")
    device = torch.device(device)
    if amp == "fp16" and device.type != "cuda":
        raise UserError(f"amp fp16 runs on CUDA only (with a GradScaler); on the {device.type.upper()} use bf16")
    return AMP_DTYPES.get(amp)


def autocast(device: torch.device | str, dtype: torch.dtype | None):
    """`torch.autocast` on the device's type with `dtype`, or a no-op for full precision."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def grad_scaler(device: torch.device | str, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A GradScaler, enabled for fp16 only (bf16 has fp32's range and needs none)."""
    device = torch.device(device)
    enabled = dtype is torch.float16
    return torch.amp.GradScaler(device.type if enabled else "cuda", enabled=enabled)


def c_compiler() -> str | None:
    """Path of the C compiler inductor would use on the CPU, or None."""
    for name in C_COMPILERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def compile_model(model: nn.Module, device: torch.device | str) -> nn.Module:
    """`torch.compile(model)`; on the CPU only with a C compiler (UserError naming what is missing)."""
    if torch.device(device).type == "cpu" and c_compiler() is None:
        raise UserError(f"compile on the CPU: torch.compile (inductor) builds C++ and no C compiler "
                        f"({', '.join(C_COMPILERS)}) is on the PATH; install one (e.g. apt-get install gcc) "
                        "or train without compile")
    return torch.compile(model)
