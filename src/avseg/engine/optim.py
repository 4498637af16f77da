"""Optimizer, learning-rate schedule and batch-normalisation modes of training.

AdamW with four parameter groups: the visual backbone at `lr * backbone_lr_mult` (QSD: 0.5, as
ReferFormer) and everything else at `lr`, each split into parameters with weight decay (weight
matrices and convolution kernels) and without (biases, every normalisation layer's parameters,
and the quantizer codebook, whose scale the VQ losses set; decaying it would pull codewords
towards 0 against the codebook loss). A model may name more parts with their own multiplier
(`model.lr_multipliers()`: parameter-name prefix -> multiplier; CAVP's segmentation head x10);
each becomes its own pair of groups. `train.optimizer=sgd` (CAVP's) takes the same groups. The
"step" schedule multiplies the lr by `lr_drop_factor` at each epoch of `lr_drop_epochs` (stepped
once per epoch); "poly" multiplies it by (1 - step / total steps) ^ power (stepped after every
optimizer step, as CAVP's code).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from avseg.errors import UserError

BATCHNORM_MODES = ("train", "sync", "frozen_backbone", "eval")
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


def is_backbone(name: str) -> bool:
    """Parameter names of the visual backbone (QSD / TPAVI `backbone.`, the TD wrapper's inner model)."""
    return name.startswith("backbone.") or ".backbone." in name


def _no_decay_names(model: nn.Module) -> set[str]:
    names = set()
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for param_name, _ in module.named_parameters(recurse=False):
            full = prefix + param_name
            if isinstance(module, NORM_TYPES) or param_name == "bias" or param_name == "codebook":
                names.add(full)
    return names


OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("step", "poly")


def _part(name: str, multipliers: dict[str, float], backbone_lr_mult: float) -> tuple[int, str, float]:
    """(order, part name, lr multiplier) of a parameter."""
    if is_backbone(name):
        return 0, "backbone", backbone_lr_mult
    for order, (prefix, mult) in enumerate(multipliers.items(), start=1):
        if name.startswith(prefix):
            return order, prefix.rstrip("."), mult
    return len(multipliers) + 1, "other", 1.0


def parameter_groups(model: nn.Module, *, lr: float, backbone_lr_mult: float, weight_decay: float) -> list[dict]:
    """AdamW / SGD groups: (backbone | the model's own parts | other) x (decay | no decay), named,
    empty groups left out."""
    no_decay = _no_decay_names(model)
    multipliers = model.lr_multipliers() if hasattr(model, "lr_multipliers") else {}
    groups: dict[tuple[int, str, float, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        groups.setdefault((*_part(name, multipliers, backbone_lr_mult), name not in no_decay), []).append(param)
    out = []
    for (_, part, mult, decay), params in sorted(groups.items(), key=lambda item: (item[0][0], not item[0][3])):
        out.append({"params": params, "lr": lr * mult, "weight_decay": weight_decay if decay else 0.0,
                    "name": f"{part}{'' if decay else '_no_decay'}"})
    if not out:
        raise UserError("the model has no trainable parameters")
    return out


def build_optimizer(model: nn.Module, *, lr: float, backbone_lr_mult: float, weight_decay: float,
                    optimizer: str = "adamw", momentum: float = 0.9) -> torch.optim.Optimizer:
    if optimizer not in OPTIMIZERS:
        raise UserError(f"train.optimizer '{optimizer}': expected one of {', '.join(OPTIMIZERS)}")
    groups = parameter_groups(model, lr=lr, backbone_lr_mult=backbone_lr_mult, weight_decay=weight_decay)
    if optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, foreach=True)
    # foreach: one kernel per group instead of a Python loop over tensors (the CPU default)
    return torch.optim.AdamW(groups, foreach=True)


def build_scheduler(optimizer: torch.optim.Optimizer, *, drop_epochs: list[int], factor: float, schedule: str = "step",
                    total_steps: int = 0, power: float = 0.9):
    """"step": lr x factor at every epoch in `drop_epochs` (`scheduler.step()` once per finished
    epoch); "poly": lr x (1 - s / total_steps) ^ power after s steps (`scheduler.step()` after
    every optimizer step)."""
    if schedule not in SCHEDULES:
        raise UserError(f"train.schedule '{schedule}': expected one of {', '.join(SCHEDULES)}")
    if schedule == "poly":
        total = max(int(total_steps), 1)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(1.0 - min(s, total) / total, 0.0) ** power)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=sorted(int(e) for e in drop_epochs), gamma=factor)


def prepare_batchnorm(model: nn.Module, mode: str, *, distributed: bool, device: torch.device) -> nn.Module:
    """Set-up before the optimizer exists: freeze backbone BN affines, or convert to SyncBatchNorm."""
    if mode not in BATCHNORM_MODES:
        raise UserError(f"train.batchnorm '{mode}': expected one of {', '.join(BATCHNORM_MODES)}")
    if mode == "frozen_backbone":
        for name, module in model.named_modules():
            if is_backbone(name + ".") and isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.requires_grad_(False)
    if mode == "sync" and distributed:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            warnings.warn("train.batchnorm=sync needs GPUs (SyncBatchNorm has no CPU kernel); using per-process BN")
    return model


def set_train_mode(model: nn.Module, mode: str) -> None:
    """`model.train()`, then put the BN layers that `mode` fixes in eval mode."""
    model.train()
    if mode not in ("frozen_backbone", "eval"):
        return
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and (mode == "eval" or is_backbone(name + ".")):
            module.eval()
