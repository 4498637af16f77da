"""Losses of the dense TPAVI baseline as the official AVSBench code computes them
(avs_scripts/{avs_s4,avs_ms3,avss}/loss.py): per-pixel BCE (S4 / MS3) or cross-entropy (AVSS),
plus the audio-visual matching loss L_AVM (Loss_AVM_AV of the paper)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avseg.structures import IGNORE_INDEX

AVM_FORMS = ("kl", "cosine")


class DenseCriterion(nn.Module):
    """L = L_seg + avm_weight * L_AVM.

    Args:
        binary: one output channel with a sigmoid (S4, MS3) instead of a softmax over classes.
        avm_weight: weight of L_AVM (official: 0.5 on MS3 and AVSS, 0 on S4; 0 turns it off).
        avm_form: "kl" (official MS3 / AVSS) or "cosine" (the official S4 script's form).

    L_seg: BCE over the pixels of the labelled frames (S4: the first frame of each clip) or the
    mean over labelled frames of each frame's mean cross-entropy (AVSS), as the official losses;
    pixels labelled `IGNORE_INDEX` (255, CAVP's data) are left out of both.

    L_AVM ("kl"), per TPAVI stage s with visual map V `[F, C, h, w]` (the relu'd stage features)
    and aligned audio A `[F, C]`, averaged over the stages:
      binary: w = sigmoid(avg_pool_{h,w}(logits)) (pooled BEFORE the sigmoid);
              v = mean_{h,w}(V * w); L_s = sum over frames and channels of KL(softmax(A) || softmax(v))
              (reduction "sum", not a mean: it grows with batch size and C);
      AVSS:   m = avg_pool_{h,w}(argmax(logits) != background) (hard mask, no gradient);
              v = mean_{h,w}(V * m); L_s = per-frame KL summed over C, averaged over labelled frames.
    L_AVM ("cosine", official S4): m = (avg_pool(sigmoid(logits)) > 0.5); v = sum(V*m) / (|m| + 1e-6);
      L_s = mean over frames of -log(relu(cos(v, A)) + 1e-6).
    """

    def __init__(self, *, binary: bool, avm_weight: float = 0.0, avm_form: str = "kl"):
        super().__init__()
        if avm_form not in AVM_FORMS:
            raise ValueError(f"avm_form '{avm_form}': expected one of {AVM_FORMS}")
        self.binary, self.avm_weight, self.avm_form = binary, avm_weight, avm_form

    def forward(self, outputs: dict, semantic: Tensor, valid: Tensor | None = None) -> dict[str, Tensor]:
        """outputs: TPAVI's dict (`semantic_logits` `[F, O, H, W]`, `stage_features`, `stage_audio`);
        semantic: class ids `[F, H, W]`; valid: bool `[F]`, frames with ground truth.

        Returns {"loss_seg", "loss_avm", "loss_total"} scalars.
        """
        logits = outputs["semantic_logits"]
        keep = torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device) if valid is None else valid.flatten()
        counted = semantic[keep] != IGNORE_INDEX  # ignored pixels (255) enter no loss
        if not bool(counted.any()):
            seg = logits.sum() * 0
        elif self.binary:
            target = (semantic[keep] > 0).to(logits.dtype)
            seg = F.binary_cross_entropy_with_logits(logits[keep, 0][counted], target[counted])
        else:
            seg = F.cross_entropy(logits[keep], semantic[keep], ignore_index=IGNORE_INDEX)
        avm = self._avm(outputs, logits, keep) if self.avm_weight > 0 else logits.sum() * 0
        return {"loss_seg": seg, "loss_avm": avm, "loss_total": seg + self.avm_weight * avm}

    def _weights(self, logits: Tensor, size: tuple[int, int]) -> Tensor:
        """The mask pooled to a stage's size `[F, 1, h, w]`, as the official loss of the form computes it."""
        if not self.binary:
            foreground = (logits.detach().argmax(dim=1, keepdim=True) != 0).to(logits.dtype)
            return F.adaptive_avg_pool2d(foreground, size)
        if self.avm_form == "cosine":
            return (F.adaptive_avg_pool2d(torch.sigmoid(logits), size) > 0.5).to(logits.dtype)
        return torch.sigmoid(F.adaptive_avg_pool2d(logits, size))

    def _avm(self, outputs: dict, logits: Tensor, keep: Tensor) -> Tensor:
        features, audios = outputs["stage_features"], outputs["stage_audio"]
        total = logits.sum() * 0
        for feature, audio in zip(features, audios):
            weights = self._weights(logits, feature.shape[-2:])
            audio = audio.reshape(-1, audio.shape[-1])  # [F, C]
            if self.avm_form == "cosine":
                pooled = (feature * weights).sum(dim=(2, 3)) / (weights.sum(dim=(2, 3)) + 1e-6)
                cosine = (F.normalize(pooled, dim=-1) * F.normalize(audio, dim=-1)).sum(-1)
                total = total - (F.relu(cosine) + 1e-6).log().mean()
                continue
            pooled = (feature * weights).mean(dim=(2, 3))
            per_frame = F.kl_div(F.log_softmax(pooled, -1), F.softmax(audio, -1), reduction="none").sum(-1)
            if self.binary:
                total = total + per_frame.sum()
            else:
                weight = keep.to(per_frame.dtype)
                total = total + (per_frame * weight).sum() / weight.sum().clamp_min(1)
        return total / max(len(features), 1)
