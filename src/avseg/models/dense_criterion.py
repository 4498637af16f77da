"""Losses of the dense TPAVI baseline (AVSBench): per-pixel BCE (S4 / MS3) or cross-entropy (AVSS),
plus the optional audio-visual matching regulariser L_AVM of its paper."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DenseCriterion(nn.Module):
    """L = L_seg + avm_weight * L_AVM.

    Args:
        binary: one output channel with a sigmoid (S4, MS3) instead of a softmax over classes.
        avm_weight: weight of L_AVM: per TPAVI stage, the KL divergence between the softmax of the
            clip's audio features and the softmax of the visual features pooled under the
            predicted sounding mask (AVSBench uses it on MS3; 0 turns it off).
    """

    def __init__(self, *, binary: bool, avm_weight: float = 0.0):
        super().__init__()
        self.binary, self.avm_weight = binary, avm_weight

    def forward(self, outputs: dict, semantic: Tensor, valid: Tensor | None = None) -> dict[str, Tensor]:
        """outputs: TPAVI's dict (`semantic_logits` `[F, O, H, W]`, `stage_features`, `stage_audio`);
        semantic: class ids `[F, H, W]`; valid: bool `[F]`, frames with ground truth.

        Returns {"loss_seg", "loss_avm", "loss_total"} scalars.
        """
        logits = outputs["semantic_logits"]
        keep = torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device) if valid is None else valid.flatten()
        if self.binary:
            target = (semantic[keep] > 0).to(logits.dtype)
            seg = F.binary_cross_entropy_with_logits(logits[keep, 0], target) if keep.any() else logits.sum() * 0
        else:
            seg = F.cross_entropy(logits[keep], semantic[keep]) if keep.any() else logits.sum() * 0
        avm = self._avm(outputs, logits) if self.avm_weight > 0 else logits.sum() * 0
        return {"loss_seg": seg, "loss_avm": avm, "loss_total": seg + self.avm_weight * avm}

    def _avm(self, outputs: dict, logits: Tensor) -> Tensor:
        if self.binary:
            sounding = torch.sigmoid(logits[:, :1])
        else:
            sounding = 1 - torch.softmax(logits, dim=1)[:, :1]  # not background
        total = logits.sum() * 0
        for feature, audio in zip(outputs["stage_features"], outputs["stage_audio"]):
            weights = F.interpolate(sounding, size=feature.shape[-2:], mode="bilinear", align_corners=False)
            pooled = (feature * weights).sum(dim=(2, 3)) / weights.sum(dim=(2, 3)).clamp_min(1e-6)
            audio = audio.flatten(0, 1)  # [F, C]
            total = total + F.kl_div(F.log_softmax(pooled, -1), F.softmax(audio, -1), reduction="batchmean")
        return total / max(len(outputs["stage_features"]), 1)
