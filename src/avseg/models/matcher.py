"""Hungarian matching of the K per-frame predictions to the frame's ground-truth objects (Eq. 10).

Conventions shared with `losses.py`:
- Classification is sigmoid-focal as in Deformable DETR / ReferFormer: `pred_logits` has one
  column per foreground class and no "no object" column; "no object" is all columns low.
  A target label `l` (class id >= 1, 0 is background and never a target) is column `l - 1`,
  so `num_classes` counts foreground classes only (class-agnostic data: 1; AVSS: 70).
- Masks are compared at the prediction's size: target masks `[N, H, W]` are downsampled to
  `[N, h, w]` with area interpolation (each value is the fraction of the cell the object covers;
  a soft target at object borders), never the other way round.
- Ignored pixels (value 255 in the label map; the target's optional `ignore` `[H, W]` bool) are
  left out of the mask BCE and Dice: the map of kept pixels is downsampled the same way (area),
  so a cell's weight w is the fraction of its pixels that count (0 = all ignored: the prediction
  there costs nothing). BCE is then the mean over kept pixels, sum(t * BCE(x, 1) + (w - t) *
  BCE(x, 0)) / sum(w), and Dice uses sum(p * w) for the predicted area; with w = 1 everywhere
  these are the plain forms, and a target without ignored pixels takes the plain code path
  (bit-identical losses).
- Boxes are (cx, cy, w, h) normalised by the image size; a target without `boxes` gets them
  from its full-resolution masks (pixel extents, so a full-image mask is (0.5, 0.5, 1, 1)).
- All costs are computed in fp32 with autocast off, whatever the dtype of the predictions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou

from avseg.structures import boxes_from_masks


def label_columns(labels: Tensor, num_classes: int) -> Tensor:
    """Logit columns `[N]` of class ids `labels [N]` (id `l` -> column `l - 1`)."""
    if labels.numel() and (int(labels.min()) < 1 or int(labels.max()) > num_classes):
        raise ValueError(
            f"target labels must be class ids in 1..{num_classes} (0 is background), got "
            f"{labels.tolist()}; check num_classes against the data set's class list"
        )
    return labels.long() - 1


def resize_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Target masks `[N, H, W]` (bool or float) as float32 `[N, *size]` (area interpolation)."""
    masks = masks.float()
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size))
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    return F.interpolate(masks.unsqueeze(1), size=size, mode="area").squeeze(1)


def keep_weights(target: dict[str, Tensor], size: tuple[int, int]) -> Tensor | None:
    """Share of kept (not ignored) pixels per cell, float32 `[h*w]` at `size`; None when the
    target has no `ignore` map or ignores no pixel (then every loss takes its plain form)."""
    ignore = target.get("ignore")
    if ignore is None or not bool(ignore.any()):
        return None
    if ignore.dim() != 2:
        raise ValueError(f"a target's ignore map must be [H, W], got shape {tuple(ignore.shape)}")
    return resize_masks((~ignore.to(torch.bool)).unsqueeze(0), size)[0].flatten()


def target_boxes(target: dict[str, Tensor]) -> Tensor:
    """The target's `boxes` `[N, 4]` cxcywh, or boxes derived from its `masks`."""
    if "boxes" in target:
        return target["boxes"].float()
    return boxes_from_masks(target["masks"])


def focal_class_cost(logits: Tensor, columns: Tensor, alpha: float, gamma: float) -> Tensor:
    """Focal classification cost `[K, N]` of logits `[K, C]` for target columns `[N]`.

    Deformable DETR's form: focal loss of "positive" minus focal loss of "negative" for the
    target class, so a prediction confident in the right class costs less than zero.
    """
    prob = logits.sigmoid()
    neg = (1 - alpha) * prob.pow(gamma) * -(1 - prob + 1e-8).log()
    pos = alpha * (1 - prob).pow(gamma) * -(prob + 1e-8).log()
    return pos[:, columns] - neg[:, columns]


def mask_bce_cost(mask_logits: Tensor, targets: Tensor) -> Tensor:
    """Mean per-pixel sigmoid BCE `[K, N]` between `mask_logits [K, P]` and `targets [N, P]`."""
    pos = F.softplus(-mask_logits)  # BCE against 1
    neg = F.softplus(mask_logits)  # BCE against 0
    return (pos @ targets.t() + neg @ (1 - targets).t()) / mask_logits.shape[1]


def mask_dice_cost(mask_logits: Tensor, targets: Tensor) -> Tensor:
    """Dice loss `[K, N]` (1 - soft Dice, +1 smoothing): `mask_logits [K, P]`, `targets [N, P]`."""
    prob = mask_logits.sigmoid()
    numerator = 2 * prob @ targets.t()
    denominator = prob.sum(dim=1, keepdim=True) + targets.sum(dim=1).unsqueeze(0)
    return 1 - (numerator + 1) / (denominator + 1)


def masked_bce_cost(mask_logits: Tensor, targets: Tensor, keep: Tensor) -> Tensor:
    """`mask_bce_cost` over kept pixels only: `keep [P]` the kept share of each cell (the targets,
    in no ignored pixel, are at most `keep`); the mean is over the kept pixels."""
    pos = F.softplus(-mask_logits)  # BCE against 1
    neg = F.softplus(mask_logits)  # BCE against 0
    total = pos @ targets.t() + (neg * keep).sum(dim=1, keepdim=True) - neg @ targets.t()
    return total / keep.sum().clamp_min(1e-6)


def masked_dice_cost(mask_logits: Tensor, targets: Tensor, keep: Tensor) -> Tensor:
    """`mask_dice_cost` over kept pixels only: the predicted area counts kept pixels."""
    prob = mask_logits.sigmoid()
    numerator = 2 * prob @ targets.t()
    denominator = (prob * keep).sum(dim=1, keepdim=True) + targets.sum(dim=1).unsqueeze(0)
    return 1 - (numerator + 1) / (denominator + 1)


class HungarianMatcher(nn.Module):
    """One-to-one assignment of K predictions to N targets per frame (N <= K expected).

    Cost = cost_class * focal + cost_mask * BCE + cost_dice * Dice + cost_bbox * L1
    + cost_giou * (-GIoU) (+ cost_slot * k for slot k, off by default); box terms are skipped
    when the outputs carry no `pred_boxes`.
    """

    def __init__(
        self,
        *,
        cost_class: float = 2.0,
        cost_mask: float = 2.0,
        cost_dice: float = 5.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        cost_slot: float = 0.0,
    ) -> None:
        super().__init__()
        # Optional, not in the paper (loss.slot_order): cost_slot * k added to slot k's costs, so
        # that near-equal slots are matched in a fixed order (docs/model.md, row "slot order prior").
        self.cost_slot = cost_slot
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    @torch.no_grad()
    def cost_matrix(
        self,
        logits: Tensor,
        masks: Tensor,
        boxes: Tensor | None,
        target: dict[str, Tensor],
    ) -> Tensor:
        """Total cost float32 `[K, N]` of one frame.

        Args:
            logits: `[K, num_classes]` class logits.
            masks: `[K, h, w]` mask logits.
            boxes: `[K, 4]` (cx, cy, w, h) in [0, 1], or None to skip the box costs.
            target: {"labels": [N] long >= 1, "masks": [N, H, W] bool, "boxes"?: [N, 4],
                "ignore"?: [H, W] bool (pixels left out of the mask costs)}.
        """
        with torch.autocast(device_type=logits.device.type, enabled=False):
            columns = label_columns(target["labels"], logits.shape[-1])
            cost = self.cost_class * focal_class_cost(
                logits.float(), columns, self.focal_alpha, self.focal_gamma
            )
            pred = masks.float().flatten(1)
            size = tuple(masks.shape[-2:])
            tgt = resize_masks(target["masks"], size).flatten(1).to(pred.device)
            keep = keep_weights(target, size)
            if keep is None:
                cost = cost + self.cost_mask * mask_bce_cost(pred, tgt)
                cost = cost + self.cost_dice * mask_dice_cost(pred, tgt)
            else:
                keep = keep.to(pred.device)
                cost = cost + self.cost_mask * masked_bce_cost(pred, tgt, keep)
                cost = cost + self.cost_dice * masked_dice_cost(pred, tgt, keep)
            if boxes is not None:
                pred_boxes = boxes.float()
                tgt_boxes = target_boxes(target).to(pred_boxes.device)
                cost = cost + self.cost_bbox * torch.cdist(pred_boxes, tgt_boxes, p=1)
                giou = generalized_box_iou(
                    box_convert(pred_boxes, in_fmt="cxcywh", out_fmt="xyxy"),
                    box_convert(tgt_boxes, in_fmt="cxcywh", out_fmt="xyxy"),
                )
                cost = cost - self.cost_giou * giou
            if self.cost_slot:
                slots = torch.arange(cost.shape[0], device=cost.device, dtype=cost.dtype)
                cost = cost + self.cost_slot * slots[:, None]
        return cost

    @torch.no_grad()
    def forward(
        self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]
    ) -> list[tuple[Tensor, Tensor]]:
        """Match every frame.

        Args:
            outputs: {"pred_logits": [F, K, num_classes], "pred_masks": [F, K, h, w] logits,
                "pred_boxes"?: [F, K, 4] cxcywh in [0, 1]}; F = frames (B*T flattened).
            targets: F dicts {"labels": [N] long >= 1, "masks": [N, H, W] bool,
                "boxes"?: [N, 4] cxcywh normalised, "ignore"?: [H, W] bool}.

        Returns:
            F pairs (pred_indices [n], target_indices [n]) of int64 CPU tensors, n = min(K, N),
            sorted by prediction index; empty for frames with N = 0.
        """
        logits, masks = outputs["pred_logits"], outputs["pred_masks"]
        boxes = outputs.get("pred_boxes")
        if len(targets) != logits.shape[0]:
            raise ValueError(f"{len(targets)} targets for {logits.shape[0]} frames of predictions")
        matches = []
        for frame, target in enumerate(targets):
            if target["labels"].numel() == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                matches.append((empty, empty.clone()))
                continue
            cost = self.cost_matrix(
                logits[frame], masks[frame], None if boxes is None else boxes[frame], target
            )
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            matches.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return matches
