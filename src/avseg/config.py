"""Typed configuration: dataclasses for every setting, YAML files, dotted command-line overrides.

A config file is YAML whose keys mirror the dataclasses below; anything it leaves out keeps the
default. Overrides use dotted keys (`data.image_size=112`). Every key is checked against the
dataclasses: an unknown or mistyped key, or a value of the wrong type, is a `ConfigError` that
names the key and the file (or the override) it came from, and suggests the closest known key.

Only the `build_*` functions of the package read a `Config`; everything below them takes plain
typed arguments.
"""

from __future__ import annotations

import re

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, InterpolationResolutionError, OmegaConfBaseException, ValidationError

from avseg.config_cavp import CavpConfig
from avseg.errors import UserError


@dataclass
class DataConfig:
    """Which data set to read and how.

    dataset: "s4", "ms3", "avss", "single_plus", "vpo_ss", "vpo_ms" or "vpo_msmi".
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
    horizontal_flip: bool = False
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
    vggish_weights: str = ""
    tiny_weights: str = ""
    freeze: bool = True


@dataclass
class ModelConfig:
    """The model: QSD (with the Table-2 switches) or the TPAVI baseline.

    num_classes: foreground classes (1 = class-agnostic "sounding" for S4 / MS3; 70 for AVSS).
    decomposition: "none" (Table 2 row 1), "continuous" (row 3) or "quantized" (rows 4-6).
    separator: "" (off) or "nmf" or "package.module:factory": row 2 (TD) when set.
    """

    name: str = "qsd"
    backbone: str = "r50"
    backbone_weights: str = ""
    backbone_drop_path: float = 0.0  # stochastic depth (the official PVT-v2-b5 of AVSBench: 0.1)
    num_classes: int = 1
    d_model: int = 256
    num_tokens: int = 5
    codebook_size: int = 128
    codebook_ema: bool = False
    codebook_decay: float = 0.99
    dead_code_threshold: float = 0.0
    kmeans_init: bool = False
    # Not in the paper, off by default (docs/model.md, "Choices the paper leaves open"): local
    # tokens also fit the codebook; continuous tokens for the first N steps; the local ASD also
    # reads the audio's time-frequency cells ("time_frequency"); class scores gated by the
    # audio-tagging head (needs loss.audio_tagging > 0; on in the CPU demo config).
    codebook_from_local: bool = False
    codebook_warmup_steps: int = 0
    audio_memory: str = "embedding"
    # Diagnosis of row 6 (docs/study.md): the frame's fused audio F_av[t] added to the quantized
    # local tokens, as rows 3-5 add it to their global tokens; the local ASD also reads the clip's
    # (quantized) global tokens, not only frame t.
    local_query_audio: bool = False
    local_reads_global: bool = False
    tag_gating: bool = False
    encoder_layers: int = 4
    asd_layers: int = 3
    decoder_layers: int = 4
    n_heads: int = 8
    ffn_dim: int = 1024
    encoder_points: int = 4
    mask_dim: int = 8
    dropout: float = 0.0
    decomposition: str = "quantized"
    recombination: bool = True
    local_calibration: bool = True
    separator: str = ""
    num_sources: int = 2
    tpavi_channels: int = 256
    tpavi_stages: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    # The official code's TPAVI (docs/model.md, "TPAVI: the official function"): attention in
    # windows of 5 frames (0 = the whole clip); audio alignment layer without bias on AVSS.
    tpavi_window: int = 5
    tpavi_audio_bias: bool = True
    cavp: CavpConfig = field(default_factory=CavpConfig)  # model.name: cavp (docs/cavp.md)


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


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file at `path` (if any), then the dotted `overrides`.

    Raises ConfigError naming the file or override and the offending key.
    """
    schema = OmegaConf.structured(Config)
    merged = schema
    sources: dict[str, str] = {}  # dotted key -> the file or override that set it
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
        merged = _merge(merged, loaded, schema, str(path))
        sources.update(dict.fromkeys(_dotted_keys(OmegaConf.to_container(loaded, resolve=False)), str(path)))
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
    return _finish(merged, schema, sources)


def config_to_dict(config: Config) -> dict:
    """A plain dict (for checkpoints and logs)."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)


def config_from_dict(data: dict) -> Config:
    """Rebuild a Config from `config_to_dict` output (e.g. from a checkpoint)."""
    schema = OmegaConf.structured(Config)
    merged = _merge(schema, OmegaConf.create(data), schema, "stored config")
    return _finish(merged, schema, {}, "stored config")


def save_config(config: Config, path: str | Path) -> None:
    """Write the config as YAML (every key, defaults included)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(OmegaConf.to_yaml(OmegaConf.structured(config)), encoding="utf-8")
