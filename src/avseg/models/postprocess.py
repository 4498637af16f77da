"""From K per-frame mask predictions to one label map (qsd-method.md §4).

`merge_masks` turns the model's K candidate objects into the segmentation output;
`foreground_probability` is the per-pixel "something sounds" probability of the binary tasks.
The training targets built from a label map live with the data (`avseg.data.targets`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from avseg.structures import BACKGROUND


@torch.no_grad()
def merge_masks(
    pred_logits: Tensor,
    pred_masks: Tensor,
    *,
    binary: bool,
    mask_threshold: float = 0.5,
    score_threshold: float = 0.3,
    size: tuple[int, int] | None = None,
) -> Tensor:
    """Merge K masks per frame into one map of class ids.

    Each token k has class scores s_k = sigmoid(pred_logits[k]) and mask probabilities
    m_k = sigmoid(pred_masks[k]). A token is kept when its best class score reaches
    `score_threshold` (tokens predicting "no object" are dropped: their masks are never
    supervised). At pixel p, the kept tokens with m_k(p) > `mask_threshold` compete, each with
    score max_c s_k[c] * m_k(p); the winner's best class labels the pixel (the per-pixel argmax
    of s_k[c] * m_k(p) over tokens and classes). Pixels where no kept mask exceeds the threshold
    are background (0).

    Args:
        pred_logits: `[F, K, C]` class logits (column c is class id c + 1).
        pred_masks: `[F, K, h, w]` mask logits.
        binary: return 0/1 (background / sounding) instead of class ids (S4, MS3).
        mask_threshold: probability a mask must exceed at a pixel.
        score_threshold: class score a token needs to take part.
        size: `(H, W)` to resize the mask logits to (bilinear) before merging; None keeps h, w.

    Returns:
        int64 `[F, H, W]`: class ids (0 = background), or 0/1 with `binary`.
    """
    masks = pred_masks.float()
    if size is not None and tuple(masks.shape[-2:]) != tuple(size):
        masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
    token_score, token_class = pred_logits.float().sigmoid().max(dim=-1)  # [F, K]
    probs = masks.sigmoid()
    on = (probs > mask_threshold) & (token_score >= score_threshold)[..., None, None]
    weighted = torch.where(on, token_score[..., None, None] * probs, torch.full_like(probs, -1.0))
    best_score, best_token = weighted.max(dim=1)  # [F, H, W]
    labels = torch.gather(token_class + 1, 1, best_token.flatten(1)).view_as(best_token)
    labels = torch.where(best_score >= 0, labels, torch.full_like(labels, BACKGROUND))
    if binary:
        labels = (labels != BACKGROUND).long()
    return labels.long()


@torch.no_grad()
def foreground_probability(
    pred_logits: Tensor,
    pred_masks: Tensor,
    size: tuple[int, int] | None = None,
    *,
    score_threshold: float = 0.3,
) -> Tensor:
    """Per-pixel probability that something sounds, from QSD's K candidate objects.

    p(x) = max over the kept tokens k of m_k(x), where m_k = sigmoid(pred_masks[k]) and a token
    is kept when its best class score max_c sigmoid(pred_logits[k, c]) reaches `score_threshold`
    (0 where no token is kept). So `p > 0.5` is exactly `merge_masks(..., binary=True)` with the
    same thresholds: the binary AVSBench J scores the model's segmentation output, and F sweeps
    its thresholds over the mask probabilities of the kept tokens.

    Args:
        pred_logits: `[F, K, C]` class logits.
        pred_masks: `[F, K, h, w]` mask logits.
        size: `(H, W)` to resize the mask logits to (bilinear) first; None keeps h, w.
        score_threshold: class score a token needs to take part (as in `merge_masks`).

    Returns:
        float32 `[F, H, W]` in [0, 1].
    """
    masks = pred_masks.float()
    if size is not None and tuple(masks.shape[-2:]) != tuple(size):
        masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
    if masks.shape[1] == 0:
        return masks.new_zeros((masks.shape[0], *masks.shape[-2:]))
    kept = pred_logits.float().sigmoid().amax(dim=-1) >= score_threshold  # [F, K]
    return torch.where(kept[..., None, None], masks.sigmoid(), torch.zeros_like(masks)).amax(dim=1)


def probability_to_logit(probability: Tensor, eps: float = 1e-6) -> Tensor:
    """logit(p), p clamped to [eps, 1 - eps]: for metrics that take logits (sigmoid inside)."""
    return torch.logit(probability.float().clamp(eps, 1.0 - eps))


@torch.no_grad()
def segment(outputs: dict, *, binary: bool, size: tuple[int, int] | None = None,
            mask_threshold: float = 0.5, score_threshold: float = 0.3) -> dict[str, Tensor]:
    """THE rule from a model's outputs to maps: what `avseg eval` scores and what `avseg predict`,
    `Predictor` and the app report (they all call this function).

    QSD (`pred_logits` `[F, K, C]`, `pred_masks` `[F, K, h, w]`): semantic data take
    `merge_masks` (tokens whose best class score reaches `score_threshold` and whose mask
    probability exceeds `mask_threshold` compete; the largest score x mask probability labels the
    pixel with its best class); binary data (S4, MS3) take `foreground_probability` (the highest
    mask probability among the kept tokens) and threshold it at `mask_threshold` (0.5, as the
    AVSBench J does), so J scores exactly the map a user sees and F sweeps the same probability.
    TPAVI (`semantic_logits` `[F, O, h, w]`): one output is a sigmoid thresholded at 0.5; several
    are a softmax (background = channel 0) labelled by argmax; on binary data the foreground
    probability 1 - p(background) thresholded at 0.5.

    Args:
        size: `(H, W)` to resize the logits to (bilinear) first; None keeps their size.

    Returns:
        "ids" int64 `[F, H, W]` (class ids, 0/1 when binary), "foreground" float `[F, H, W]` (the
        probability that something sounds), and for QSD "token" int64 `[F, H, W]` (the token that
        labels each pixel, -1 where none does), "token_score" / "token_class" `[F, K]` (best class
        score and its class id, >= 1); for TPAVI "probs" `[F, O, H, W]`.
    """
    if "semantic_logits" in outputs:
        return _dense_maps(outputs["semantic_logits"].float(), binary, size)
    logits, masks = outputs["pred_logits"].float(), outputs["pred_masks"].float()
    if size is not None and tuple(masks.shape[-2:]) != tuple(size):
        masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
    token_score, token_class = logits.sigmoid().max(dim=-1)  # [F, K]
    probs = masks.sigmoid()
    kept = (token_score >= score_threshold)[..., None, None]
    foreground = foreground_probability(logits, masks, score_threshold=score_threshold)
    if binary:
        best, token = torch.where(kept, probs, torch.full_like(probs, -1.0)).max(dim=1)
        ids = (foreground > mask_threshold).long()
        token = torch.where(ids > 0, token, torch.full_like(token, -1))
    else:
        on = (probs > mask_threshold) & kept
        weighted = torch.where(on, token_score[..., None, None] * probs, torch.full_like(probs, -1.0))
        best, token = weighted.max(dim=1)  # [F, H, W]
        token = torch.where(best >= 0, token, torch.full_like(token, -1))
        ids = torch.where(token >= 0, torch.gather(token_class + 1, 1, token.clamp(min=0).flatten(1)).view_as(token),
                          torch.zeros_like(token))
    return {"ids": ids.long(), "foreground": foreground, "token": token, "token_score": token_score,
            "token_class": token_class + 1}


def _dense_maps(logits: Tensor, binary: bool, size: tuple[int, int] | None) -> dict[str, Tensor]:
    if size is not None and tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    if logits.shape[1] == 1:
        prob = logits[:, 0].sigmoid()
        return {"ids": (prob > 0.5).long(), "foreground": prob, "probs": torch.stack([1 - prob, prob], dim=1)}
    probs = logits.softmax(dim=1)
    ids = probs.argmax(dim=1)
    foreground = 1 - probs[:, 0]
    if binary:
        return {"ids": (foreground > 0.5).long(), "foreground": foreground,
                "probs": torch.stack([probs[:, 0], foreground], dim=1)}
    return {"ids": ids, "foreground": foreground, "probs": probs}
