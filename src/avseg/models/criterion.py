"""Training losses of QSD (Eq. 8-10): set-prediction segmentation losses plus the VQ losses.

    L      = L_seg + lambda_vq * L_vq
    L_seg  = sum over the final and every auxiliary decoder layer of
             w_ce * focal + w_mask * BCE + w_dice * Dice + w_bbox * L1 + w_giou * (1 - GIoU)
    L_vq   = codebook + beta * (global commitment + local commitment)

Each layer's predictions are matched to the targets with the Hungarian matcher (per frame);
every segmentation term is summed over matched pairs (the focal term over all K predictions and
classes, unmatched predictions having all-zero targets = "no object") and divided by the number
of target objects in the batch, averaged over ranks when torch.distributed is initialised and
clamped to >= 1 (as in DETR). Masks are compared at the prediction's size (targets downsampled,
see matcher.py); pixels in a target's `ignore` map (label 255) are left out of the mask BCE and
Dice, weighted as in the matcher (a frame without ignored pixels gets the plain terms). Frames
without ground truth are left out through `valid`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou, sigmoid_focal_loss

from avseg.distributed import initialized
from avseg.models.matcher import HungarianMatcher, keep_weights, label_columns, resize_masks, target_boxes

SEG_LOSSES = ("loss_ce", "loss_mask", "loss_dice", "loss_bbox", "loss_giou")
DEFAULT_WEIGHTS = {
    "loss_ce": 2.0, "loss_mask": 2.0, "loss_dice": 5.0, "loss_bbox": 5.0, "loss_giou": 2.0
}
FRAME_KEYS = ("pred_logits", "pred_masks", "pred_boxes")


def _num_objects(targets: list[dict[str, Tensor]], device: torch.device) -> float:
    """Target objects in the batch, averaged over ranks, at least 1."""
    count = torch.tensor(float(sum(int(t["labels"].numel()) for t in targets)), device=device)
    if initialized():
        dist.all_reduce(count)
        count = count / dist.get_world_size()
    return max(float(count), 1.0)


def _graph_zero(outputs: dict) -> Tensor:
    """A zero that depends on every prediction tensor (keeps DDP's autograd graph complete)."""
    return sum(outputs[k].float().sum() * 0.0 for k in FRAME_KEYS if k in outputs)


def _select_frames(outputs: dict, frames: Tensor) -> dict:
    """Outputs (and their aux outputs) restricted to frame indices `frames`."""
    selected = {k: outputs[k][frames] for k in FRAME_KEYS if k in outputs}
    if "aux_outputs" in outputs:
        selected["aux_outputs"] = [_select_frames(aux, frames) for aux in outputs["aux_outputs"]]
    return selected


def dice_loss(mask_logits: Tensor, targets: Tensor) -> Tensor:
    """Dice loss per mask `[n]` (1 - soft Dice, +1 smoothing); inputs `[n, P]`."""
    prob = mask_logits.sigmoid()
    numerator = 2 * (prob * targets).sum(dim=1)
    denominator = prob.sum(dim=1) + targets.sum(dim=1)
    return 1 - (numerator + 1) / (denominator + 1)


def masked_mask_losses(mask_logits: Tensor, targets: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """(BCE mean over kept pixels, Dice) per mask `[n]`; `keep [n, P]` the kept share of each
    cell (matcher.keep_weights), targets `[n, P]` at most `keep`."""
    pos, neg = F.softplus(-mask_logits), F.softplus(mask_logits)
    bce = (targets * pos + (keep - targets) * neg).sum(dim=1) / keep.sum(dim=1).clamp_min(1e-6)
    prob = mask_logits.sigmoid()
    numerator = 2 * (prob * targets).sum(dim=1)
    denominator = (prob * keep).sum(dim=1) + targets.sum(dim=1)
    return bce, 1 - (numerator + 1) / (denominator + 1)


class SetCriterion(nn.Module):
    """QSD's losses.

    Args:
        num_classes: foreground classes = columns of `pred_logits` (label l -> column l - 1).
        matcher: the Hungarian matcher.
        weights: weights of "loss_ce", "loss_mask", "loss_dice", "loss_bbox", "loss_giou";
            missing keys take `DEFAULT_WEIGHTS` (ReferFormer's: 2, 2, 5, 5, 2).
        focal_alpha, focal_gamma: sigmoid focal loss parameters of the classification term.
        lambda_vq: weight of L_vq in the total.
        beta: weight of the commitment terms inside L_vq.
        audio_tagging: weight of the optional audio-tagging term (not in the paper; 0 = off):
            BCE between the model's "audio_tag_logits" `[F, num_classes]` and each frame's
            multi-hot set of target classes, averaged over the valid frames and classes.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        weights: dict[str, float] | None = None,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        lambda_vq: float = 1.0,
        beta: float = 0.25,
        audio_tagging: float = 0.0,
    ) -> None:
        super().__init__()
        unknown = set(weights or {}) - set(SEG_LOSSES)
        if unknown:
            raise ValueError(f"unknown loss weights {sorted(unknown)}; known: {list(SEG_LOSSES)}")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.lambda_vq = lambda_vq
        self.beta = beta
        self.audio_tagging = audio_tagging

    def forward(
        self,
        outputs: dict,
        targets: list[dict[str, Tensor]],
        valid: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Compute the losses.

        Args:
            outputs: {"pred_logits": [F, K, num_classes], "pred_masks": [F, K, h, w] logits,
                "pred_boxes"?: [F, K, 4] cxcywh in [0, 1], "aux_outputs"?: list of dicts with
                the same keys (one per earlier decoder layer), "vq"?: {"codebook_loss",
                "commitment_loss", "local_commitment_loss"?} scalars}.
            targets: F dicts {"labels": [N] long >= 1, "masks": [N, H, W] bool, "boxes"?,
                "ignore"?: [H, W] bool (pixels left out of the mask terms)}.
            valid: bool `[F]`; frames where it is False (no ground truth) get no loss.

        Returns:
            Unweighted scalars "loss_ce", "loss_mask", "loss_dice", ("loss_bbox", "loss_giou"
            when boxes are predicted), the same suffixed "_0", "_1", ... per aux output,
            "loss_vq", and the weighted "loss_total".
        """
        if valid is not None:
            if valid.numel() != len(targets):
                raise ValueError(f"valid has {valid.numel()} entries for {len(targets)} frames")
            frames = torch.nonzero(valid.flatten().to(torch.bool).cpu()).flatten()
            targets = [targets[i] for i in frames.tolist()]
            outputs_valid = _select_frames(outputs, frames.to(outputs["pred_logits"].device))
        else:
            outputs_valid = outputs
        zero = _graph_zero(outputs)
        num_objects = _num_objects(targets, outputs["pred_logits"].device)
        layers = [("", outputs_valid)]
        layers += [(f"_{i}", aux) for i, aux in enumerate(outputs_valid.get("aux_outputs", []))]
        losses: dict[str, Tensor] = {}
        total = zero
        for suffix, layer in layers:
            for key, value in self._layer_losses(layer, targets, num_objects, zero).items():
                losses[key + suffix] = value
                total = total + self.weights[key] * value
        losses["loss_vq"] = self._vq_loss(outputs.get("vq"), zero)
        total = total + self.lambda_vq * losses["loss_vq"]
        if self.audio_tagging > 0:
            if "audio_tag_logits" not in outputs:
                raise ValueError("audio_tagging > 0 needs the model's audio-tagging head (build it from the same config)")
            losses["loss_audio_tag"] = self._audio_tag_loss(outputs["audio_tag_logits"], targets, valid, zero)
            total = total + self.audio_tagging * losses["loss_audio_tag"]
        losses["loss_total"] = total
        return losses

    def _audio_tag_loss(self, logits: Tensor, targets: list[dict[str, Tensor]], valid: Tensor | None,
                        zero: Tensor) -> Tensor:
        """BCE of per-frame class tags `[F, C]` against the valid frames' multi-hot target classes."""
        if valid is not None:
            logits = logits[valid.flatten().to(torch.bool).to(logits.device)]
        if logits.shape[0] == 0:
            return zero
        tags = torch.zeros(logits.shape, dtype=torch.float32, device=logits.device)
        for frame, target in enumerate(targets):
            tags[frame, label_columns(target["labels"], self.num_classes).to(logits.device)] = 1.0
        return F.binary_cross_entropy_with_logits(logits.float(), tags)

    def _vq_loss(self, vq: dict | None, zero: Tensor) -> Tensor:
        """codebook + beta * (commitment + local commitment); missing terms count as 0."""
        if not vq:
            return zero
        commitment = vq.get("commitment_loss", zero) + vq.get("local_commitment_loss", zero)
        return vq.get("codebook_loss", zero) + self.beta * commitment

    def _layer_losses(
        self, outputs: dict, targets: list[dict[str, Tensor]], num_objects: float, zero: Tensor
    ) -> dict[str, Tensor]:
        """Losses of one decoder layer's predictions (frames already restricted to valid)."""
        has_boxes = "pred_boxes" in outputs
        keys = SEG_LOSSES if has_boxes else SEG_LOSSES[:3]
        if not targets:
            return {k: zero for k in keys}
        matches = self.matcher(outputs, targets)
        with torch.autocast(device_type=outputs["pred_logits"].device.type, enabled=False):
            logits = outputs["pred_logits"].float()
            losses = {"loss_ce": self._class_loss(logits, targets, matches, num_objects)}
            frame_idx = torch.cat([torch.full_like(p, i) for i, (p, _) in enumerate(matches)])
            pred_idx = torch.cat([p for p, _ in matches])
            if pred_idx.numel() == 0:
                losses.update({k: zero for k in keys[1:]})
                return losses
            matched = (targets, matches, frame_idx, pred_idx, num_objects)
            losses.update(self._mask_losses(outputs, *matched))
            if has_boxes:
                losses.update(self._box_losses(outputs, *matched))
        return losses

    def _class_loss(self, logits: Tensor, targets: list, matches: list, num_objects: float):
        """Sigmoid focal loss over all F x K x num_classes entries / num_objects."""
        onehot = torch.zeros_like(logits)
        for frame, (pred, tgt) in enumerate(matches):
            columns = label_columns(targets[frame]["labels"], self.num_classes)
            onehot[frame, pred.to(logits.device), columns[tgt].to(logits.device)] = 1.0
        loss = sigmoid_focal_loss(logits, onehot, alpha=self.focal_alpha, gamma=self.focal_gamma)
        return loss.sum() / num_objects

    def _mask_losses(self, outputs, targets, matches, frame_idx, pred_idx, num_objects) -> dict:
        """BCE (mean over pixels) and Dice of matched masks, each summed / num_objects."""
        masks = outputs["pred_masks"]
        pred = masks[frame_idx.to(masks.device), pred_idx.to(masks.device)].float().flatten(1)
        size = tuple(masks.shape[-2:])  # targets [n, h*w] at the prediction's size
        tgt = torch.cat(
            [resize_masks(targets[f]["masks"][t], size) for f, (_, t) in enumerate(matches)]
        ).flatten(1).to(pred.device)
        bce = F.binary_cross_entropy_with_logits(pred, tgt, reduction="none").mean(dim=1)
        dice = dice_loss(pred, tgt)
        keeps = [keep_weights(targets[f], size) for f in range(len(matches))]
        if any(keep is not None for keep in keeps):  # frames with ignored pixels: masked terms
            counts = [len(t) for _, t in matches]
            rows = torch.cat([torch.full((n,), keep is not None, dtype=torch.bool)
                              for n, keep in zip(counts, keeps)]).to(pred.device)
            keep = torch.cat([keep.to(pred.device).expand(n, -1)
                              for n, keep in zip(counts, keeps) if keep is not None])
            masked_bce, masked_dice = masked_mask_losses(pred[rows], tgt[rows], keep)
            bce, dice = bce.clone(), dice.clone()
            bce[rows], dice[rows] = masked_bce, masked_dice
        return {
            "loss_mask": bce.sum() / num_objects,
            "loss_dice": dice.sum() / num_objects,
        }

    def _box_losses(self, outputs, targets, matches, frame_idx, pred_idx, num_objects) -> dict:
        """L1 and 1 - GIoU of matched boxes (cxcywh), each summed / num_objects."""
        device = outputs["pred_boxes"].device
        pred = outputs["pred_boxes"][frame_idx.to(device), pred_idx.to(device)].float()
        tgt = torch.cat([target_boxes(targets[f])[t] for f, (_, t) in enumerate(matches)])
        tgt = tgt.to(device)
        giou = torch.diag(
            generalized_box_iou(
                box_convert(pred, in_fmt="cxcywh", out_fmt="xyxy"),
                box_convert(tgt, in_fmt="cxcywh", out_fmt="xyxy"),
            )
        )
        return {
            "loss_bbox": F.l1_loss(pred, tgt, reduction="none").sum() / num_objects,
            "loss_giou": (1 - giou).sum() / num_objects,
        }
