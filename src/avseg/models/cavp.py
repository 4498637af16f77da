"""CAVP ("A Closer Look at Audio-Visual Semantic Segmentation", Chen et al.): the model.

    frame -> dilated ResNet (output stride 16 or 8) -> ASPP, upsampled to stride 4, concatenated
          with the reduced stride-4 features (DeepLabV3+; width C = 256 + 48 = 304)
          -> visual MLP projector (per position)
          -> one cross-attention block with the audio embedding (audio network -> C)
          -> classifier (two 3x3 conv-BN-ReLU, 1x1 to the classes incl. background)
          -> logits at the input size

Every frame is segmented on its own with the audio of its own second (no temporal model). The
output is dense like TPAVI's (`semantic_logits` `[B*T, O, H, W]`, a softmax over background and
the classes, also for binary data: O = 2 there), so `avseg.models.postprocess.segment`, `avseg
eval`, `avseg predict`, the app and `bench speed` use it unchanged. `fused` (the cross-attention
output `[B*T, C, H/4, W/4]`) feeds the audio-visual contrastive loss of CAVP's training
(`avseg.models.cavp_loss`, `avseg.engine.cavp_pairing`). docs/cavp.md lists every choice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import Tensor, nn

from avseg.models.cavp_parts import ASPP, CrossAttentionFusion, DilatedResNet


class CAVP(nn.Module):
    """The CAVP segmentation model.

    Args:
        backbone: a `DilatedResNet`.
        audio_encoder: maps the audio input of one frame (`[N, 96, 64]` log-mel or
            `[N, C, frames, 64]` spectrogram) to `[N, C_fused]`.
        num_outputs: background + classes (2 for binary data).
        aspp_channels, low_level_channels: C_fused = their sum (authors: 256 + 48 = 304).
        head_lr_mult, audio_lr_mult: learning-rate multipliers of the segmentation head (ASPP,
            low-level reduction, classifier) and of the audio network (`lr_multipliers`).
    """

    def __init__(
        self, *, backbone: DilatedResNet, audio_encoder: nn.Module, num_outputs: int, aspp_channels: int = 256,
        low_level_channels: int = 48, aspp_rates=(6, 12, 18), projector_hidden: int = 256, fusion_heads: int = 4,
        freeze_audio_encoder: bool = False, head_lr_mult: float = 10.0, audio_lr_mult: float = 1.0,
    ):
        super().__init__()
        low, last = backbone.channels
        width = aspp_channels + low_level_channels
        self.backbone = backbone
        self.aspp = ASPP(last, aspp_channels, tuple(aspp_rates))
        self.reduce = nn.Sequential(nn.Conv2d(low, low_level_channels, 1, bias=False),
                                    nn.BatchNorm2d(low_level_channels), nn.ReLU())
        self.projector = Mlp(width, projector_hidden, width)
        self.fusion = CrossAttentionFusion(width, fusion_heads)
        self.classifier = nn.Sequential(
            nn.Conv2d(width, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256), nn.ReLU(),
            nn.Conv2d(256, num_outputs, 1),
        )
        self.audio_encoder = audio_encoder
        self.freeze_audio_encoder = freeze_audio_encoder
        if freeze_audio_encoder:
            audio_encoder.requires_grad_(False)
        self.width, self.num_outputs = width, num_outputs
        self._lr_mults = {"aspp.": head_lr_mult, "reduce.": head_lr_mult, "classifier.": head_lr_mult,
                          "audio_encoder.": audio_lr_mult}

    def lr_multipliers(self) -> dict[str, float]:
        """Parameter-name prefix -> learning-rate multiplier (read by `avseg.engine.optim`)."""
        return dict(self._lr_mults)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_audio_encoder:
            self.audio_encoder.eval()
        return self

    def visual_features(self, images: Tensor) -> Tensor:
        """images `[N, 3, H, W]` -> DeepLabV3+ features `[N, C_fused, H/4, W/4]` (before fusion)."""
        low, last = self.backbone(images)
        context = F.interpolate(self.aspp(last), size=low.shape[-2:], mode="bilinear", align_corners=True)
        return torch.cat([context, self.reduce(low)], dim=1)

    def embed_audio(self, audio: Tensor) -> Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_audio_encoder):
            return self.audio_encoder(audio)

    def fuse(self, visual: Tensor, audio: Tensor) -> Tensor:
        """visual `[N, C, h, w]`, audio embeddings `[N, C]` -> fused features `[N, C, h, w]`."""
        tokens = self.projector(visual.flatten(2).transpose(1, 2))  # [N, hw, C]
        fused = self.fusion(tokens, audio)
        return fused.transpose(1, 2).reshape(visual.shape)

    def forward(self, frames: Tensor, log_mel: Tensor, frame_present: Tensor | None = None,
                paired_log_mel: Tensor | None = None) -> dict:
        """frames `[B, T, 3, H, W]`, log_mel `[B, T, 96, 64]` or `[B, T, C, frames, 64]` (one audio
        input per frame), frame_present unused (every frame stands alone; padded slots are not
        scored) -> {"semantic_logits": `[B*T, O, H, W]`, "fused": `[B*T, C, H/4, W/4]`}.

        paired_log_mel (training, CAVP pairing): a second audio input per frame; the visual
        features are computed once and used twice, the audio of both inputs goes through the audio
        network in one batch, and both outputs are returned one after the other (`[2*B*T, ...]`,
        the original pairs first)."""
        images = frames.flatten(0, 1)
        audio = log_mel.flatten(0, 1)
        visual = self.visual_features(images)
        if paired_log_mel is not None:
            audio = torch.cat([audio, paired_log_mel.flatten(0, 1)])
            visual = torch.cat([visual, visual])
        fused = self.fuse(visual, self.embed_audio(audio))
        logits = F.interpolate(self.classifier(fused), size=images.shape[-2:], mode="bilinear", align_corners=False)
        return {"semantic_logits": logits, "fused": fused}
