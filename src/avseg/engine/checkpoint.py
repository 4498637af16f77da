"""Checkpoints: written atomically, loaded with `weights_only=True`, carrying their config.

A checkpoint is a dict:

    "model"      the model's state dict (for DDP, of the unwrapped module)
    "config"     `config_to_dict(config)`: a checkpoint alone rebuilds its model
    "version"    the avseg version that wrote it
    "step", "epoch"                  progress counters
    "optimizer", "scheduler", "scaler"   state dicts (training checkpoints; absent in exports)
    "rng"        {"torch", "cuda", "numpy", "python"} generator states (training checkpoints)
    "extra"      anything else the trainer keeps (sampler position, best metric, ...)
    "digests"    {"model": {name: sha256}, "optimizer": {path: sha256}}: one SHA-256 per tensor
                 (dtype, shape and bytes), checked on load (`verify_tensors`)

Only tensors, numbers, strings, lists and dicts go in, so `torch.load(weights_only=True)` reads
it back without running any pickled code, and the stored config is rebuilt with the closed
registries only: a checkpoint that names code (a `module:function` separator) is refused.
A damaged tensor (digest mismatch) or a non-finite weight is a UserError naming the tensor;
checkpoints written before digests existed load with a warning.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from avseg import __version__
from avseg.config import Config, config_from_dict, config_to_dict, first_line
from avseg.errors import UserError


DIGESTED = ("model", "optimizer")  # the sections whose tensors carry a SHA-256 each
TEMP_GLOB = ".*.pt.*.tmp"  # temp files of interrupted writes (mkstemp names below)


def _tensors(value, prefix: str = ""):
    """(dotted path, tensor) of every tensor in a nested state dict, in a fixed order."""
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, dict):
        for key in value:
            yield from _tensors(value[key], f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _tensors(item, f"{prefix}.{index}" if prefix else str(index))


def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 (hex) of a tensor's dtype, shape and bytes."""
    tensor = tensor.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    if tensor.numel():
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def tensor_digests(section) -> dict[str, str]:
    """{path: SHA-256} of every tensor of a state dict."""
    return {name: tensor_digest(tensor) for name, tensor in _tensors(section)}


def _os_error(err: BaseException) -> OSError | None:
    """The OSError behind `err` (torch.save wraps a failed write in a RuntimeError)."""
    while err is not None:
        if isinstance(err, OSError):
            return err
        err = err.__cause__ or err.__context__
    return None


def save_checkpoint(path: str | Path, *, model: nn.Module, config: Config, **state: Any) -> Path:
    """Write `{"model", "config", "version", "digests", **state}` to `path` atomically (temp + rename).

    An interrupted write never leaves a half-written file at `path`: the previous checkpoint
    stays intact until the new one is complete. A full disk or an unwritable folder is a UserError.
    """
    path = Path(path)
    module = getattr(model, "module", model)  # unwrap DistributedDataParallel
    payload = {"model": module.state_dict(), "config": config_to_dict(config), "version": __version__, **state}
    payload["digests"] = {key: tensor_digests(payload[key]) for key in DIGESTED if key in payload}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise UserError(f"{path}: cannot write the checkpoint ({err.strerror or first_line(err)})") from None
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException as err:
        Path(temp).unlink(missing_ok=True)
        cause = _os_error(err) if isinstance(err, Exception) else None
        if cause is not None:
            raise UserError(f"{path}: cannot write the checkpoint ({cause.strerror or first_line(cause)}); "
                            "the previous one, if any, is kept") from None
        raise
    return path


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temp files that writes killed mid-way left in `folder`; returns them."""
    stale = sorted(Path(folder).glob(TEMP_GLOB)) if Path(folder).is_dir() else []
    for temp in stale:
        temp.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *, verify: bool = True) -> dict:
    """Read a checkpoint with `weights_only=True` and verify its tensors; a UserError names the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        if path.stat().st_size == 0:
            raise UserError(f"{path}: empty file (0 bytes), not a checkpoint")
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except UserError:
        raise
    except Exception as err:  # zip, pickle, OS and weights_only errors come in many types
        raise UserError(f"{path}: not a readable avseg checkpoint ({first_line(err)})") from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "config" not in checkpoint:
        raise UserError(f"{path}: not an avseg checkpoint (no 'model' and 'config' entries)")
    if verify:
        verify_tensors(path, checkpoint)
    return checkpoint


def verify_tensors(path: str | Path, checkpoint: dict) -> None:
    """UserError naming the tensor whose SHA-256 differs from the stored one, or a non-finite weight."""
    digests = checkpoint.get("digests")
    if not isinstance(digests, dict):
        warnings.warn(f"{path}: written without tensor digests (an older avseg); its tensors cannot be verified",
                      stacklevel=3)
    else:
        for section, expected in digests.items():
            actual = dict(_tensors(checkpoint.get(section)))
            for name in [*expected, *(n for n in actual if n not in expected)]:
                if name not in expected or name not in actual or tensor_digest(actual[name]) != expected[name]:
                    raise UserError(f"{path}: tensor '{section}.{name}' is damaged (its SHA-256 differs from "
                                    "the one stored when the checkpoint was written)")
    for name, tensor in _tensors(checkpoint["model"]):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UserError(f"{path}: tensor 'model.{name}' holds non-finite values (NaN or inf)")


def checked_config(path: str | Path, stored: dict, trusted: Config | None = None) -> Config:
    """The config a checkpoint stores, rebuilt from the closed registries only.

    A `module:function` model.qsd.separator is refused, unless `trusted` (the user's own config,
    given with --allow-import) names the same one. Weight files and the opt-in to unpickling
    data are never taken from a checkpoint.
    """
    from avseg.models.separation import SEPARATORS, is_import_path

    try:
        config = config_from_dict(stored)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    name = config.model.qsd.separator
    if name and name not in SEPARATORS:
        allowed = is_import_path(name) and trusted is not None and trusted.model.qsd.separator == name
        if not allowed:
            raise UserError(f"{path}: its config names model.qsd.separator '{name}', not one of avseg's "
                            f"({', '.join(SEPARATORS)}); a checkpoint cannot name code: refused")
    config.model.backbone_weights = config.audio.vggish_weights = config.audio.tiny_weights = ""
    if config.data.use_log_mel_pkl:
        warnings.warn(f"{path}: its config opts in to unpickling data (data.use_log_mel_pkl); ignored: "
                      "only your own config can opt in", stacklevel=3)
        config.data.use_log_mel_pkl = False
    return config


def model_from_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *,
                          trusted: Config | None = None) -> tuple[nn.Module, Config, dict]:
    """Rebuild the model a checkpoint was trained as and load its weights.

    Weight files named in the stored config are not needed (the checkpoint holds every weight),
    so they are cleared before building. trusted: see `checked_config`. Returns (model in eval
    mode, config, checkpoint).
    """
    from avseg.models.build import build_model

    checkpoint = load_checkpoint(path, map_location)
    config = checked_config(path, checkpoint["config"], trusted)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="VGGish has no weights")
        model = build_model(config, allow_import=trusted is not None)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as err:
        raise UserError(f"{path}: weights do not fit the model its config describes ({first_line(err)})") from None
    return model.to(map_location).eval(), config, checkpoint
