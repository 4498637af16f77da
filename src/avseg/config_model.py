"""The `model` section of the config (`avseg.config.Config.model`): shared fields, then one
sub-section each for QSD's switches and sizes, its quantizer, the TPAVI baseline and QSD's
options that are not in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from avseg.config_cavp import CavpConfig


@dataclass(slots=True)
class QSDConfig:
    """QSD's Table-2 switches and the sizes of its audio-semantic decomposition (`model.qsd.*`).

    decomposition: "none" (Table 2 row 1), "continuous" (row 3) or "quantized" (rows 4-6).
    recombination: the semantic recombination (row 5 on); local_calibration: the local ASD (row 6).
    separator: "" (off) or "nmf" or "package.module:factory": row 2 (TD, separate then segment)
        when set, with num_sources sources (needs decomposition "none").
    """

    decomposition: str = "quantized"
    recombination: bool = True
    local_calibration: bool = True
    num_tokens: int = 5
    asd_layers: int = 3
    separator: str = ""
    num_sources: int = 2


@dataclass(slots=True)
class QuantizerConfig:
    """The shared codebook of the quantized decomposition (`model.quantizer.*`).

    lookup_dim: 0 (codewords of width d_model, as the paper's E in [M, C]) or d, quantize in a
        learned d-dimensional space (factorized codes); cosine: nearest codeword by angle. Both are
        lookup choices the paper leaves open (docs/study.md, "The codebook collapse").
    """

    codebook_size: int = 128
    codebook_ema: bool = False
    codebook_decay: float = 0.99
    dead_code_threshold: float = 0.0
    kmeans_init: bool = False
    lookup_dim: int = 0
    cosine: bool = False


@dataclass(slots=True)
class TPAVIConfig:
    """The TPAVI baseline (`model.tpavi.*`; docs/model.md, "TPAVI: the official function").

    window: attention in windows of this many frames, as the official code (0 = the whole clip).
    audio_bias: the audio alignment layer has a bias (the official AVSS model has none).
    """

    channels: int = 256
    stages: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    window: int = 5
    audio_bias: bool = True


@dataclass(slots=True)
class ExtrasConfig:
    """QSD options NOT in the paper, all off by default (`model.extras.*`; `avseg.models.qsd_extras`).

    codebook_from_local: the local tokens also fit the codebook. codebook_warmup_steps: continuous
    tokens for the first N steps. audio_memory: "time_frequency" lets the local ASD also read the
    audio's time-frequency cells. local_query_audio: F_av[t] added to the quantized local tokens
    (as rows 3-5 add it to their global tokens). local_reads_global: the local ASD also reads the
    clip's global tokens. tag_gating: class scores gated by the audio-tagging head (needs
    loss.audio_tagging > 0).
    """

    codebook_from_local: bool = False
    codebook_warmup_steps: int = 0
    audio_memory: str = "embedding"
    local_query_audio: bool = False
    local_reads_global: bool = False
    tag_gating: bool = False


@dataclass(slots=True)
class ModelConfig:
    """The model: QSD (`qsd`, `quantizer`, `extras`) or the TPAVI baseline (`tpavi`).

    The fields here are shared (the backbone, the class count, the transformer sizes). The flat
    keys of older configs (`model.decomposition`, `model.tpavi_window`, ...) are still read, with
    a warning naming the new key (`avseg.config_compat`, docs/model.md "Config keys").
    num_classes: foreground classes (1 = class-agnostic "sounding" for S4 / MS3; 70 for AVSS).
    """

    name: str = "qsd"
    backbone: str = "r50"
    backbone_weights: str = ""
    backbone_drop_path: float = 0.0  # stochastic depth (the official PVT-v2-b5 of AVSBench: 0.1)
    num_classes: int = 1
    d_model: int = 256
    encoder_layers: int = 4
    decoder_layers: int = 4
    n_heads: int = 8
    ffn_dim: int = 1024
    encoder_points: int = 4
    mask_dim: int = 8
    dropout: float = 0.0
    qsd: QSDConfig = field(default_factory=QSDConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    tpavi: TPAVIConfig = field(default_factory=TPAVIConfig)
    extras: ExtrasConfig = field(default_factory=ExtrasConfig)
    cavp: CavpConfig = field(default_factory=CavpConfig)  # model.name: cavp (docs/cavp.md)
