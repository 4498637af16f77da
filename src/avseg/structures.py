"""The vocabulary that data, models and metrics share: label ids and boxes of masks.

Kept below every package so that the data pipeline (training targets) and the models (matcher,
post-processing) use one definition without importing each other.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_convert, masks_to_boxes

BACKGROUND = 0
SOUNDING = 1  # the single class id of class-agnostic data (S4, MS3)
# a label pixel no loss and no metric counts (CAVP's data: VPO masks, crop padding); never a class
IGNORE_INDEX = 255


def boxes_from_masks(masks: Tensor) -> Tensor:
    """Boxes float32 `[N, 4]` (cx, cy, w, h) in [0, 1] of masks `[N, H, W]`; empty mask -> 0s."""
    height, width = masks.shape[-2:]
    if masks.shape[0] == 0:
        return torch.zeros((0, 4), dtype=torch.float32, device=masks.device)
    xyxy = masks_to_boxes(masks.bool().to(torch.uint8)).float()
    filled = masks.flatten(1).any(dim=1)
    xyxy[:, 2:] += filled.float().unsqueeze(1)  # inclusive last pixel -> pixel extent
    xyxy = xyxy / torch.tensor([width, height, width, height], device=xyxy.device)
    return box_convert(xyxy, in_fmt="xyxy", out_fmt="cxcywh")
