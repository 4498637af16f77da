"""Set-prediction training targets from a label map: what the matcher compares the K tokens with."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from avseg.structures import BACKGROUND, IGNORE_INDEX, SOUNDING, boxes_from_masks


def _components(foreground: Tensor, min_area: int) -> Tensor:
    """8-connected components of bool `[H, W]` with at least `min_area` pixels, `[N, H, W]`.

    If every component is smaller, the largest one is kept so that a frame with sounding
    pixels never ends up without a target.
    """
    components, count = ndimage.label(foreground.cpu().numpy(), structure=np.ones((3, 3)))
    if count == 0:
        return torch.zeros((0, *foreground.shape), dtype=torch.bool, device=foreground.device)
    ids = torch.arange(1, count + 1).view(-1, 1, 1)
    masks = torch.from_numpy(components).unsqueeze(0) == ids
    areas = masks.flatten(1).sum(dim=1)
    keep = areas >= min_area
    if not keep.any():
        keep = areas == areas.max()
        keep &= keep.cumsum(0) == 1  # first of the largest
    return masks[keep].to(foreground.device)


def masks_to_targets(semantic: Tensor, *, class_agnostic: bool, min_area: int) -> dict[str, Tensor]:
    """Matcher targets of one frame from its class-id map.

    Ignored pixels (`IGNORE_INDEX`, 255) are in no target, and the `ignore` map carries them to
    the set losses, which leave them out of the mask terms (`avseg.models.matcher`). Semantic data: one target per class
    present (background 0 excluded), dropping classes with
    fewer than `min_area` pixels. Class-agnostic data: the foreground (id > 0) split into
    8-connected components, those under `min_area` pixels dropped (unless all are: then the
    largest is kept), each labelled "sounding" (1).

    Args:
        semantic: int64 `[H, W]` class ids, 0 = background.

    Returns:
        {"labels": int64 [N] (>= 1), "masks": bool [N, H, W],
         "boxes": float32 [N, 4] (cx, cy, w, h) normalised by W, H, "ignore": bool [H, W]}.
    """
    if class_agnostic:
        masks = _components((semantic != BACKGROUND) & (semantic != IGNORE_INDEX), min_area)
        labels = torch.full((masks.shape[0],), SOUNDING, dtype=torch.int64, device=semantic.device)
    else:
        class_ids = torch.unique(semantic)
        class_ids = class_ids[(class_ids != BACKGROUND) & (class_ids != IGNORE_INDEX)]
        masks = semantic.unsqueeze(0) == class_ids.view(-1, 1, 1)
        keep = masks.flatten(1).sum(dim=1) >= min_area
        masks, labels = masks[keep], class_ids[keep].to(torch.int64)
    return {"labels": labels, "masks": masks, "boxes": boxes_from_masks(masks), "ignore": semantic == IGNORE_INDEX}
