"""Ranges of the config's numbers: a value no run can use is refused when the config is loaded.

`check_ranges(config)` returns the first (dotted key, what is wrong) or None. It reads the
`Config` dataclasses of `avseg.config` by attribute (no import, so no cycle); the type of every
value has already been checked by OmegaConf against the dataclasses.
"""

from __future__ import annotations

import math
from typing import Any, Callable

Rule = tuple[str, Callable[[Any], bool], str]


def _positive(value) -> bool:
    return math.isfinite(value) and value > 0


def _non_negative(value) -> bool:
    return math.isfinite(value) and value >= 0


def _share(value) -> bool:
    return math.isfinite(value) and 0 <= value <= 1


RULES: list[Rule] = [
    ("data.image_size", lambda v: 16 <= v <= 8192, "must lie in [16, 8192] pixels"),
    ("data.batch_size", lambda v: v >= 1, "must be at least 1"),
    ("data.num_workers", lambda v: v >= 0, "must be 0 (load in the main process) or more"),
    ("data.max_damaged", lambda v: v >= -1, "must be -1 (2% of the train split), 0 or more"),
    ("model.num_classes", lambda v: v >= 1, "must be at least 1"),
    ("model.d_model", lambda v: v >= 1, "must be at least 1"),
    ("model.qsd.num_tokens", lambda v: v >= 1, "must be at least 1"),
    ("model.quantizer.codebook_size", lambda v: v >= 1, "must be at least 1"),
    ("model.quantizer.codebook_decay", _share, "must lie in [0, 1]"),
    ("model.quantizer.lookup_dim", lambda v: v >= 0, "must be 0 (off) or a positive width"),
    ("model.n_heads", lambda v: v >= 1, "must be at least 1"),
    ("model.ffn_dim", lambda v: v >= 1, "must be at least 1"),
    ("model.qsd.num_sources", lambda v: v >= 1, "must be at least 1"),
    ("model.dropout", lambda v: math.isfinite(v) and 0 <= v < 1, "must lie in [0, 1)"),
    ("train.epochs", lambda v: v >= 1, "must be at least 1"),
    ("train.max_steps", lambda v: v >= 0, "must be 0 (run train.epochs) or more"),
    ("train.lr", lambda v: _positive(v) and v < 10, "the learning rate must be a positive number below 10"),
    ("train.backbone_lr_mult", _non_negative, "must be a finite number >= 0"),
    ("train.weight_decay", _non_negative, "must be a finite number >= 0"),
    ("train.lr_drop_factor", _positive, "must be a finite number > 0"),
    ("train.grad_clip", _non_negative, "must be a finite number >= 0 (0 = off)"),
    ("train.eval_every", lambda v: v >= 0, "must be 0 (never) or more"),
    ("train.checkpoint_every_steps", lambda v: v >= 0, "must be 0 (only at epoch ends) or more"),
    ("train.checkpoint_every_epochs", lambda v: v >= 0, "must be 0 or more"),
    ("train.log_every", lambda v: v >= 1, "must be at least 1"),
    ("train.contrastive_share", _share, "must lie in [0, 1]"),
    ("train.eval_batch_size", lambda v: v >= 0, "must be 0 (data.batch_size) or more"),
    ("train.lr_drop_epochs", lambda v: all(e >= 0 for e in v), "epochs must be 0 or more"),
    ("train.momentum", lambda v: math.isfinite(v) and 0 <= v < 1, "must lie in [0, 1)"),
    ("train.poly_power", _positive, "must be a finite number > 0"),
    ("model.cavp.output_stride", lambda v: v in (8, 16, 32), "must be 8, 16 or 32"),
    ("model.cavp.overwrite_rate", _share, "must lie in [0, 1]"),
    ("model.cavp.frames_per_clip", lambda v: v >= 0, "must be 0 (every labelled frame) or more"),
    ("model.cavp.bank_size", lambda v: v >= 1, "must be at least 1"),
    ("model.cavp.bank_start_epoch", lambda v: v >= 0, "must be 0 or more"),
    ("model.cavp.temperature", _positive, "must be a finite number > 0"),
    ("model.cavp.max_views", lambda v: v >= 1, "must be at least 1"),
    ("model.cavp.contrast_weight", _non_negative, "must be a finite number >= 0"),
    ("model.cavp.head_lr_mult", _non_negative, "must be a finite number >= 0"),
    ("model.cavp.audio_lr_mult", _non_negative, "must be a finite number >= 0"),
    ("model.cavp.audio_channels", lambda v: v >= 1, "must be at least 1"),
    ("loss.lambda_vq", _non_negative, "must be a finite number >= 0"),
    ("loss.audio_tagging", _non_negative, "must be a finite number >= 0"),
]


def _get(config, key: str):
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def check_ranges(config) -> tuple[str, str] | None:
    """(key, "= VALUE: what is wrong") of the first value out of its range, or None."""
    for key, ok, message in RULES:
        value = _get(config, key)
        if not ok(value):
            return key, f"{value!r} is out of range: {message}"
    return None
