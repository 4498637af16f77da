"""CAVP's losses: the segmentation cross-entropy on the original pairs and the supervised
audio-visual contrastive loss on the fused features of the original and the shuffled pairs
(docs/cavp.md, "The training step").

The contrastive loss works on pixels of the fused features (stride 4), labels downsampled to
their size by nearest neighbour:
- anchors of the original pairs: for every class with at least `max_views` foreground pixels in
  the batch, `max_views` of them drawn at random (a class with fewer is left out); plus k
  background pixels;
- anchors of the shuffled pairs: k pixels drawn among the positions that are foreground in the
  original pairs, labelled with the shuffled pair's target there (the class when the shuffled
  audio matches, background when not), k = min(max_views, those positions, background pixels);
- `info_nce` over all anchors (each anchor against all the others).
So a shuffled pair whose audio does not match pulls its foreground pixels towards background
features: the model must listen. Value 255 is ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE = 255


def info_nce(embeddings: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Supervised contrastive loss of anchors `[M, C]` (L2-normalised) with labels `[M]`.

    With s_ij = e_i . e_j / temperature, positives P(i) = {j != i: y_j = y_i} and negatives
    N(i) = {j: y_j != y_i}:
        loss_i = -1/|P(i)| sum_{p in P(i)} log( exp(s_ip) / (exp(s_ip) + sum_{n in N(i)} exp(s_in)) )
    (0 for an anchor without positives), loss = mean over the M anchors. Each positive is scored
    against the negatives only, not against the other positives.
    """
    same = labels[:, None] == labels[None, :]
    logits = embeddings @ embeddings.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()  # stability; cancels in the ratio
    exp = logits.exp()
    negatives = (exp * (~same)).sum(dim=1, keepdim=True)
    log_prob = logits - torch.log(exp + negatives)
    positives = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    per_anchor = (log_prob * positives).sum(dim=1) / (positives.sum(dim=1) + 1e-12)
    return -per_anchor.mean()


def _labels_at(labels: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long().flatten()


def _draw(count: int, keep: int, generator: torch.Generator | None, device) -> Tensor:
    return torch.randperm(count, generator=generator)[:keep].to(device)


def contrast_anchors(fused: Tensor, labels: Tensor, fused_paired: Tensor, labels_paired: Tensor, *, max_views: int,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor] | None:
    """The anchors of the loss (module docstring): (embeddings `[M, C]`, labels `[M]`), or None
    when no class has `max_views` foreground pixels. fused*: `[N, C, h, w]`; labels*: `[N, H, W]`."""
    size = fused.shape[-2:]
    lab, lab_paired = _labels_at(labels, size), _labels_at(labels_paired, size)
    emb = F.normalize(fused, dim=1).permute(0, 2, 3, 1).reshape(-1, fused.shape[1])
    emb_paired = F.normalize(fused_paired, dim=1).permute(0, 2, 3, 1).reshape(-1, fused.shape[1])
    foreground = (lab > 0) & (lab != IGNORE)
    chosen = []
    for cls in lab[foreground].unique().tolist():
        where = (lab == cls).nonzero()[:, 0]
        if len(where) >= max_views:
            chosen.append(where[_draw(len(where), max_views, generator, where.device)])
    if not chosen:
        return None
    chosen = torch.cat(chosen)
    background = (lab == 0).nonzero()[:, 0]
    positions = foreground.nonzero()[:, 0]
    k = min(max_views, len(positions), len(background))
    background = background[_draw(len(background), k, generator, background.device)]
    positions = positions[_draw(len(positions), k, generator, positions.device)]
    embeddings = torch.cat([emb[chosen], emb[background], emb_paired[positions]])
    return embeddings, torch.cat([lab[chosen], lab[background], lab_paired[positions]])


def class_targets(semantic: Tensor, binary: bool) -> Tensor:
    """Targets of the softmax over background + classes (binary data: 0 / 1; 255 kept)."""
    if not binary:
        return semantic
    return torch.where(semantic == IGNORE, semantic, (semantic > 0).long())


class CavpCriterion(nn.Module):
    """L = CE(original pairs) + contrast_weight * L_contrast (CAVP pairing only).

    Called like the dense criterion (`outputs`, semantic `[F, H, W]`, valid `[F]`) it is the
    cross-entropy over the frames with ground truth (255 ignored). With `paired_semantic` (the
    targets of the shuffled pairs, `avseg.engine.cavp_pairing`) the outputs hold 2F frames, the
    original pairs first: the logits of the shuffled half enter the cross-entropy multiplied by
    zero (as the authors' code: no signal, but every parameter stays in the graph), and the
    contrastive loss is computed on the fused features of both halves.
    """

    def __init__(self, *, binary: bool, contrast_weight: float = 1.0, temperature: float = 0.1, max_views: int = 512):
        super().__init__()
        self.binary, self.contrast_weight = binary, contrast_weight
        self.temperature, self.max_views = temperature, max_views

    def forward(self, outputs: dict, semantic: Tensor, valid: Tensor | None = None, paired_semantic: Tensor | None = None,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        logits = outputs["semantic_logits"]
        frames = semantic.shape[0]
        if paired_semantic is not None:
            logits = logits[:frames] + logits[frames:] * 0.0
        target = class_targets(semantic, self.binary)
        keep = torch.ones(frames, dtype=torch.bool, device=logits.device) if valid is None else valid.flatten()
        known = target[keep] != IGNORE
        seg = F.cross_entropy(logits[keep], target[keep], ignore_index=IGNORE) if bool(known.any()) else logits.sum() * 0
        contrast = logits.sum() * 0
        if paired_semantic is not None and self.contrast_weight > 0:
            fused = outputs["fused"]
            anchors = contrast_anchors(fused[:frames], target, fused[frames:], class_targets(paired_semantic, self.binary),
                                       max_views=self.max_views, generator=generator)
            if anchors is not None:
                contrast = info_nce(anchors[0].float(), anchors[1], self.temperature)
        return {"loss_seg": seg, "loss_contrast": contrast, "loss_total": seg + self.contrast_weight * contrast}
