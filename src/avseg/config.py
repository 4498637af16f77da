"""Typed configuration: dataclasses for every setting, YAML files, dotted command-line overrides.

A config file is YAML whose keys mirror the dataclasses below; anything it leaves out keeps the
default. Overrides use dotted keys (`data.image_size=112`). Every key is checked against the
dataclasses: an unknown or mistyped key, or a value of the wrong type, is a `ConfigError` that
names the key and the file (or the override) it came from, and suggests the closest known key.

Only the `build_*` functions of the package read a `Config`; everything below them takes plain
typed arguments.
"""

from __future__ import annotations

import copy
import re
import warnings

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, InterpolationResolutionError, OmegaConfBaseException, ValidationError

from avseg.config_model import ExtrasConfig, ModelConfig, QSDConfig, QuantizerConfig, TPAVIConfig
from avseg.config_compat import (ConfigDeprecationWarning, KeyConflict, deprecation_message, translate_overrides,
                                 translate_tree)
from avseg.errors import UserError

__all__ = ["Config", "ConfigDeprecationWarning", "ConfigError", "ExtrasConfig", "ModelConfig", "QSDConfig",
           "QuantizerConfig", "TPAVIConfig", "config_from_dict", "config_to_dict", "load_config", "save_config"]


@dataclass
class DataConfig:
    """Which data set to read and how.

    dataset: "s4", "ms3", "avss", "single_plus", "single_plus_cavp", "vpo_ss", "vpo_ms" or
        "vpo_msmi" (`avseg.data.datasets`).
    root: the data set folder as its authors ship it (see docs/datasets.md).
    """

    dataset: str = "s4"
    root: str = "data/s4"
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    image_size: int = 224
    # evaluation resize of the AVSBench readers (S4, MS3, AVSS): "square" (every frame squashed to
    # image_size x image_size, as the AVSBench code) or "longest_side" (QSD §4: aspect kept, longest
    # side image_size, padded; padding left out of the metrics, scored at the label's size)
    resize: str = "square"
    avss_subsets: list[str] = field(default_factory=lambda: ["v1s", "v1m", "v2"])
    # VPO evaluation (docs/vpo.md "Scoring"): "native" (CAVP's: each image at its own size, batch
    # 1, one map scored at the label's size) or "square_vote" (avseg's earlier rule: image_size
    # squares, the per-second maps of the VGGish examples merged by a per-pixel majority vote)
    vpo_eval: str = "native"
    # VPO mask PNG -> class ids: "correct" (one look-up) or "authors" (CAVP's in-place remap that
    # turns car into airplane where one mask holds both; for numbers comparable with theirs)
    vpo_remap: str = "correct"
    horizontal_flip: bool = False
    # training augmentation: "none" (the readers' resize, plus horizontal_flip) or "cavp" (CAVP's
    # loaders: flip with the stereo channels swapped, random rescale, VPO colour jitter, padding
    # with 255 and a random image_size crop; avseg.data.augment, docs/cavp-data.md)
    train_augment: str = "none"
    use_log_mel_pkl: bool = False  # unpickling runs code: opt in only for files you trust
    load_waveform: bool = False  # keep the 16 kHz waveform in each sample (Table 2 row 2 needs it)
    batch_size: int = 4
    num_workers: int = 2
    # training clips that cannot be read are named once and skipped, up to this many; one more
    # stops the run (-1 = 2% of the train split, at least 1; 0 = stop at the first)
    max_damaged: int = -1


@dataclass
class AudioConfig:
    """The audio encoder.

    encoder: "vggish" (the paper's; 72 M parameters) or "tiny" (a 4-layer CNN over the same
        log-mel, for CPU-sized runs on the synthetic benchmark only).
    vggish_weights: local path of `vggish-10086976.pth`; empty = random initialisation (a warning
        is printed; fine for the synthetic benchmark, meaningless on real data).
    tiny_weights: weights of the "tiny" encoder written by `avseg pretrain-audio` (audio tagging
        on the train split, a stand-in for VGGish's AudioSet pretraining); empty = random init.
    freeze: keep the audio encoder's weights fixed (the paper freezes pretrained VGGish).
    """

    encoder: str = "vggish"
    # the readers' audio features: "vggish" (VGGish log-mel examples [T, 96, 64]; QSD, TPAVI) or
    # "cavp" (CAVP's scaled log-mel [T_a, C, F, 64], avseg.audio.cavp_frontend; docs/audio.md)
    frontend: str = "vggish"
    vggish_weights: str = ""
    tiny_weights: str = ""
    freeze: bool = True


@dataclass
class LossConfig:
    """Matching costs and loss weights (ReferFormer's), Eq. 8-10; TPAVI's dense loss."""

    cls: float = 2.0
    mask: float = 2.0
    dice: float = 5.0
    bbox: float = 5.0
    giou: float = 2.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    lambda_vq: float = 1.0
    beta: float = 0.25
    # Not in the paper (0 = off): weight of an auxiliary audio-tagging BCE on F_a (each second's
    # sounding classes), for audio encoders trained from scratch (docs/model.md, row "audio
    # encoder help for from-scratch runs").
    audio_tagging: float = 0.0
    # Not in the paper (0 = off): matching cost slot_order * k added for slot k, so that slots
    # with near-equal predictions are matched in a fixed order (docs/model.md, row "slot order prior").
    slot_order: float = 0.0
    # TPAVI's audio-visual matching loss (official: 0.5 on MS3 and AVSS, off on S4) and its form:
    # "kl" (official MS3 / AVSS) or "cosine" (the official S4 script's, off in its shipped runs).
    tpavi_avm_weight: float = 0.0
    tpavi_avm_form: str = "kl"


@dataclass
class TrainConfig:
    """Training and evaluation (`avseg train`, `avseg eval`; docs/training.md).

    The paper (QSD §4): AdamW, lr 1e-4, backbone lr x0.5, 13 epochs (AVS-Object) or 16
    (AVS-Semantic) with the lr multiplied by 0.1 once near the end (the epoch numbers were lost in
    the paper's text; the shipped configs drop after 3/4 of the schedule: epoch 10 of 13, 12 of 16).

    epochs: passes over the train split (ignored when max_steps > 0).
    max_steps: stop after this many optimizer steps (0 = run `epochs` epochs).
    lr: base learning rate; backbone_lr_mult scales it for the visual backbone.
    weight_decay: AdamW decay of weight matrices; never applied to biases, normalisation
        parameters or the quantizer codebook.
    lr_drop_epochs: epochs (0-based, counted at their start) from which the lr is multiplied by
        lr_drop_factor once more (a step schedule).
    grad_clip: max global gradient norm (0 = off).
    amp: "none", "bf16" or "fp16" (autocast; fp16 adds a GradScaler and runs on CUDA only; bf16 also on the CPU).
    eval_every: evaluate on data.val_split every this many epochs (0 = never).
    checkpoint_every_steps: also write last.pt every this many steps (0 = only at epoch ends).
    checkpoint_every_epochs: write last.pt after every this many epochs (0 = never at epoch
        ends; the run's end always writes it).
    seed: seed of the run (-1 = the top-level `seed`).
    deterministic: deterministic algorithms and cuDNN (slower; ops without a deterministic
        kernel warn instead of failing).
    log_every: steps between log lines (JSONL, TensorBoard).
    num_workers: DataLoader workers (-1 = data.num_workers).
    compile: torch.compile the model (CUDA, and the CPU where a C compiler is on the PATH).
    pairing: "empty_target" (clips paired with another class's audio get an all-background
        target; on when contrastive_share > 0) or "cavp" (CAVP's doubled batch, sound bank and
        contrastive loss, model.cavp; docs/cavp.md).
    contrastive_share: empty-target pairing: share of each batch replaced by clips paired
        with the audio of a clip of another class and an all-background target (0 = off).
    optimizer: "adamw" or "sgd" (momentum `momentum`; CAVP's). schedule: "step" (lr_drop_epochs)
        or "poly" (lr x (1 - step / total steps) ^ poly_power after every step; CAVP's).
    device: "auto" (CUDA when available), "cpu" or "cuda".
    batchnorm: "train" (per-process batch statistics), "sync" (SyncBatchNorm across GPUs),
        "frozen_backbone" (backbone BN in eval mode with fixed affine parameters, as DETR and
        ReferFormer; the other BN layers train) or "eval" (every BN uses its running statistics,
        affine parameters still train).
    find_unused_parameters: DDP's flag (some Table-2 rows leave parameters unused).
    eval_batch_size: clips per evaluation batch (0 = data.batch_size).
    """

    epochs: int = 13
    max_steps: int = 0
    lr: float = 1e-4
    backbone_lr_mult: float = 0.5
    weight_decay: float = 5e-4
    lr_drop_epochs: list[int] = field(default_factory=lambda: [10])
    lr_drop_factor: float = 0.1
    grad_clip: float = 0.1
    amp: str = "none"
    eval_every: int = 1
    checkpoint_every_steps: int = 500
    checkpoint_every_epochs: int = 1
    seed: int = -1
    deterministic: bool = False
    log_every: int = 20
    num_workers: int = -1
    compile: bool = False
    contrastive_share: float = 0.0
    pairing: str = "empty_target"
    optimizer: str = "adamw"
    momentum: float = 0.9
    schedule: str = "step"
    poly_power: float = 0.9
    device: str = "auto"
    batchnorm: str = "train"
    find_unused_parameters: bool = True
    eval_batch_size: int = 0


@dataclass
class Config:
    """The whole configuration of a run."""

    data: DataConfig = field(default_factory=DataConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    output_dir: str = "runs/default"


class ConfigError(UserError):
    """A config file or override that does not match the dataclasses."""


OVERRIDE_PATTERN = re.compile(r"^[A-Za-z_][\w.]*=")  # a dotted KEY=VALUE command-line override


def _known_keys(schema: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key in schema.keys():
        full = f"{prefix}{key}"
        keys.append(full)
        value = schema[key]
        if isinstance(value, DictConfig):
            keys.extend(_known_keys(value, f"{full}."))
    return keys


def _dotted_keys(tree: dict, prefix: str = "") -> list[str]:
    """Every dotted key of a plain nested dict (sections and leaves)."""
    keys = []
    for key, value in tree.items():
        keys.append(f"{prefix}{key}")
        if isinstance(value, dict):
            keys.extend(_dotted_keys(value, f"{prefix}{key}."))
    return keys


def _explain(err: OmegaConfBaseException, schema: DictConfig, source: str) -> ConfigError:
    key = getattr(err, "full_key", None) or "?"
    if isinstance(err, ConfigKeyError):
        close = difflib.get_close_matches(str(key), _known_keys(schema), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return ConfigError(f"{source}: unknown config key '{key}'{hint}")
    if isinstance(err, ValidationError):
        return ConfigError(f"{source}: bad value for '{key}': {first_line(err)}")
    if isinstance(err, InterpolationResolutionError):
        return ConfigError(f"{source}: cannot resolve the interpolation in '{key}': {first_line(err)}")
    return ConfigError(f"{source}: {first_line(err)}")


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message, else its type's name."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _yaml_problem(err: Exception) -> str:
    """A YAML error as "line L, column C: problem" (1-based, as editors count)."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or getattr(err, "context", None) or first_line(err)
    if mark is None:
        return problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _finish(merged: DictConfig, schema: DictConfig, sources: dict[str, str], default: str = "config") -> Config:
    """Resolve interpolations, build the dataclasses and check every value's range."""
    try:
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = str(getattr(err, "full_key", None) or "")
        raise _explain(err, schema, _source_of(key, sources, default)) from None
    from avseg.config_checks import check_ranges

    problem = check_ranges(config)
    if problem is not None:
        key, message = problem
        raise ConfigError(f"{_source_of(key, sources, default)}: {key}: {message}")
    return config


def _source_of(key: str, sources: dict[str, str], default: str) -> str:
    return sources.get(key) or next((s for k, s in sources.items() if key.startswith(f"{k}.")), default)


def _merge(base: DictConfig, other: Any, schema: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as err:
        raise _explain(err, schema, source) from None


def _translated(tree: dict, source: str, moved: dict[str, tuple[str, str]]) -> dict:
    """`tree` with the old flat model keys in their sections (`avseg.config_compat`)."""
    try:
        pairs = translate_tree(tree)
    except KeyConflict as err:
        raise ConfigError(f"{source}: {err}") from None
    for old, new in pairs:
        moved.setdefault(old, (new, source))
    return tree


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file at `path` (if any), then the dotted `overrides`.

    Old flat model keys are read into their sections with one ConfigDeprecationWarning per key.
    Raises ConfigError naming the file or override and the offending key.
    """
    schema = OmegaConf.structured(Config)
    merged = schema
    sources: dict[str, str] = {}  # dotted key -> the file or override that set it
    moved: dict[str, tuple[str, str]] = {}  # old key -> (new key, where it was read)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = OmegaConf.load(path)
        except Exception as err:  # YAML syntax errors come in several types
            raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(err)})") from None
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"{path}: expected a mapping of config sections at the top level")
        tree = _translated(OmegaConf.to_container(loaded, resolve=False), str(path), moved)
        merged = _merge(merged, OmegaConf.create(tree), schema, str(path))
        sources.update(dict.fromkeys(_dotted_keys(tree), str(path)))
    try:
        overrides, renamed = translate_overrides(list(overrides))
    except KeyConflict as err:
        raise ConfigError(f"overrides: {err}") from None
    for old, new, item in renamed:
        moved.setdefault(old, (new, f"override '{item}'"))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected key=value, e.g. data.image_size=112")
        if item.endswith("="):  # `key=` means the empty string (OmegaConf would read None)
            item = f"{item}''"
        try:
            dotlist = OmegaConf.from_dotlist([item])
        except OmegaConfBaseException as err:
            raise ConfigError(f"override '{item}': {first_line(err)}") from None
        merged = _merge(merged, dotlist, schema, f"override '{item}'")
        sources[item.partition("=")[0]] = f"override '{item}'"
    config = _finish(merged, schema, sources)
    for old, (new, source) in moved.items():
        warnings.warn(deprecation_message(old, new, source), ConfigDeprecationWarning, stacklevel=2)
    return config


def config_to_dict(config: Config) -> dict:
    """A plain dict (for checkpoints and logs)."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)


def config_from_dict(data: dict) -> Config:
    """Rebuild a Config from `config_to_dict` output (e.g. from a checkpoint).

    A config stored before the model config had sections is read silently into them.
    """
    schema = OmegaConf.structured(Config)
    tree = _translated(copy.deepcopy(data), "stored config", {})
    merged = _merge(schema, OmegaConf.create(tree), schema, "stored config")
    return _finish(merged, schema, {}, "stored config")


def save_config(config: Config, path: str | Path) -> None:
    """Write the config as YAML (every key, defaults included)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(OmegaConf.to_yaml(OmegaConf.structured(config)), encoding="utf-8")
