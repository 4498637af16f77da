"""From a model's outputs for one frame to what `avseg predict` reports: a class map and objects.

The maps are the ones `avseg eval` scores: QSD's candidates are merged with
`avseg.postprocess.merge_masks`'s rule on semantic data and thresholded as the foreground
probability on binary data (S4, MS3); TPAVI's dense logits are used directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

MAX_POSTPROCESS_PIXELS = 1920 * 1088  # maps are computed at input size up to this, then upscaled


@dataclass(frozen=True)
class OutputRules:
    """How outputs become maps: binary or semantic, class names, the QSD merge thresholds."""

    binary: bool
    class_names: tuple[str, ...]
    mask_threshold: float = 0.5
    score_threshold: float = 0.3

    def name(self, class_id: int) -> str:
        return self.class_names[class_id] if class_id < len(self.class_names) else f"class {class_id}"

    def entry(self, class_id: int, score: float) -> dict:
        return {"class": self.name(class_id), "class_id": class_id, "score": round(score, 4)}


def box_of(mask: np.ndarray, scale: tuple[float, float] = (1.0, 1.0)) -> list[float]:
    """[x0, y0, x1, y1] of the True pixels of `mask` `[H, W]` (x1, y1 exclusive), times (sy, sx)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    sy, sx = scale
    return [round(float(cols[0]) * sx, 1), round(float(rows[0]) * sy, 1),
            round(float(cols[-1] + 1) * sx, 1), round(float(rows[-1] + 1) * sy, 1)]


def token_map(logits: Tensor, masks: Tensor, size: tuple[int, int], rules: OutputRules):
    """QSD's K candidates of one frame -> (class map `[H, W]`, [(object, its pixels)]).

    Each token k has score s_k = max_c sigmoid(logits[k, c]) and mask m_k = sigmoid(masks[k])
    (mask logits resized to `size`, bilinear). Semantic data: `merge_masks` (tokens with
    s_k >= score_threshold whose m_k > mask_threshold compete; the largest s_k * m_k labels the
    pixel with its best class). Binary data: max_k s_k * m_k > 0.5, the foreground probability
    the J / F metrics threshold. Objects are the tokens that win at least one labelled pixel: their
    class, score s_k and those pixels.

    Args:
        logits: `[K, C]`; masks: `[1, K, h, w]`.
    """
    probs = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)[0].sigmoid()  # [K, H, W]
    token_score, token_class = logits.sigmoid().max(dim=-1)  # [K]
    weighted = token_score[:, None, None] * probs
    if rules.binary:
        best_score, best_token = weighted.max(dim=0)
        found = best_score > 0.5
        labels = found.long()
    else:
        on = (probs > rules.mask_threshold) & (token_score >= rules.score_threshold)[:, None, None]
        best_score, best_token = torch.where(on, weighted, torch.full_like(probs, -1.0)).max(dim=0)
        found = best_score >= 0
        labels = torch.where(found, token_class[best_token] + 1, torch.zeros_like(best_token))
    objects = []
    for k in torch.unique(best_token[found]).tolist():
        class_id = 1 if rules.binary else int(token_class[k]) + 1
        objects.append((rules.entry(class_id, float(token_score[k])), ((best_token == k) & found).cpu().numpy()))
    return labels, objects


def dense_map(logits: Tensor, size: tuple[int, int], rules: OutputRules):
    """TPAVI's logits `[1, O, h, w]` of one frame -> (class map, [(object, its pixels)]).

    One output: sigmoid > 0.5; several: softmax argmax (background included). One object per
    class present, scored by the mean probability of that class over its pixels.
    """
    logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)[0]  # [O, H, W]
    if logits.shape[0] == 1:
        prob = logits[0].sigmoid()
        labels, probs = (prob > 0.5).long(), torch.stack([1 - prob, prob])
    else:
        probs = logits.softmax(dim=0)
        labels = probs.argmax(dim=0)
    if rules.binary and probs.shape[0] > 2:  # a semantic head on binary data: any class sounds
        probs, labels = torch.stack([probs[0], 1 - probs[0]]), (labels > 0).long()
    objects = []
    for class_id in torch.unique(labels).tolist():
        if class_id:
            where = labels == class_id
            objects.append((rules.entry(class_id, float(probs[class_id][where].mean())), where.cpu().numpy()))
    return labels, objects


@torch.no_grad()
def frame_output(outputs: dict, f: int, size: tuple[int, int], rules: OutputRules) -> tuple[np.ndarray, list[dict]]:
    """Output frame `f` of a model call -> (class ids `[H, W]` at `size`, objects best first).

    Maps are computed at `size` (the input's), or, above MAX_POSTPROCESS_PIXELS, at a smaller
    size of the same aspect and upscaled (nearest), so memory per frame stays bounded.
    Objects: `{"class", "class_id", "score", "box": [x0, y0, x1, y1]}` in input pixels.
    """
    height, width = size
    shrink = min(1.0, (MAX_POSTPROCESS_PIXELS / (height * width)) ** 0.5)
    work = (max(1, round(height * shrink)), max(1, round(width * shrink)))
    if "semantic_logits" in outputs:
        labels, found = dense_map(outputs["semantic_logits"][f : f + 1].float(), work, rules)
    else:
        labels, found = token_map(outputs["pred_logits"][f].float(), outputs["pred_masks"][f : f + 1].float(),
                                  work, rules)
    scale = (height / work[0], width / work[1])
    objects = sorted(({**obj, "box": box_of(mask, scale)} for obj, mask in found), key=lambda o: -o["score"])
    if work != (height, width):
        labels = F.interpolate(labels[None, None].float(), size=(height, width), mode="nearest")[0, 0].long()
    dtype = np.uint8 if len(rules.class_names) <= 256 else np.int32
    return labels.cpu().numpy().astype(dtype), objects
