"""The `model.cavp` section of the config: CAVP's model and training options (docs/cavp.md).

Kept apart from `avseg.config` so that the CAVP options stay one small, self-contained section.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CavpConfig:
    """CAVP ("A Closer Look at Audio-Visual Semantic Segmentation"); read only when
    `model.name: cavp` (model options) or `train.pairing: cavp` (training options).

    Model: DeepLabV3+ on a dilated ResNet (`model.backbone` r18 / r50 / r101), a visual MLP
    projector, one audio-visual cross-attention block, a classifier; the audio network is a
    ResNet-18 on the spectrogram ("resnet18") or VGGish ("vggish", `audio.vggish_weights`).
    Training (`train.pairing: cavp`): each batch doubled with shuffled audio, the sound bank from
    `bank_start_epoch` on, CE on the original half, the audio-visual contrastive loss.
    """

    output_stride: int = 16  # 16 (authors' AVSS / Single+) or 8 (authors' VPO)
    layer4_dilations: list[int] = field(default_factory=lambda: [2, 4, 8])  # multi-grid of the last stage
    aspp_rates: list[int] = field(default_factory=lambda: [6, 12, 18])
    aspp_channels: int = 256  # ASPP output; the fused width is aspp_channels + low_level_channels
    low_level_channels: int = 48
    projector_hidden: int = 256
    fusion_heads: int = 4
    audio_network: str = "resnet18"  # "resnet18" (spectrogram, authors' VPO) or "vggish" (authors' AVSS)
    audio_channels: int = 1  # input channels of the ResNet-18 audio network (2 for stereo VPO)
    audio_weights: str = ""  # ImageNet ResNet-18 file for the audio network (conv1 and fc stay random)
    head_lr_mult: float = 10.0  # ASPP, low-level reduction and classifier: lr x this (authors: 10)
    audio_lr_mult: float = 1.0  # the audio network's lr multiplier
    # training (train.pairing: cavp)
    frames_per_clip: int = 1  # labelled frames drawn per clip per step (authors: 1); 0 = every labelled frame
    overwrite_rate: float = 0.5  # share of the mismatched pairs whose audio the bank overwrites
    bank_start_epoch: int = 1  # the bank overwrites from this epoch on (0-based; authors: the second epoch)
    bank_size: int = 1  # entries kept per class; the oldest kept is read (1 = the latest)
    contrast_weight: float = 1.0
    temperature: float = 0.1
    max_views: int = 512  # pixels drawn per class (classes with fewer in the batch are left out)
