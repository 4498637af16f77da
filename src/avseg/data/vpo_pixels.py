"""VPO pixels: COCO rasters, mask PNG values -> VPO class ids (255 = ignore), and the authors' remap.

A VPO mask PNG holds the COCO category id of each sounding object's pixels, 0 for background
and 255 where CAVP's data leave a pixel out ("ignore"; their loss and both metrics skip it).
`read_mask` maps every COCO id to its VPO class id in one look-up (`remap="correct"`, the
default). cyh-0/CAVP instead rewrites the mask in place, one COCO id at a time in ascending
order (`VisualDataset.__getitem__` of dataset/vpo_*), so a pixel already rewritten to a VPO id
is rewritten again when that VPO id is also a COCO id present later in the same mask: car
(COCO 3 -> VPO 5) then airplane (COCO 5 -> VPO 1) turns the car pixels into airplane whenever
one MS / MSMI mask holds both. `remap="authors"` reproduces this, for numbers comparable with
theirs (docs/vpo.md "Class remapping").
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from avseg.errors import UserError
from avseg.structures import IGNORE_INDEX

REMAPS = ("correct", "authors")


def annotation_mask(segmentation, height: int, width: int) -> np.ndarray:
    """COCO polygon / RLE / compressed RLE segmentation -> bool `[H, W]` (COCO's raster)."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        counts = segmentation["counts"]
        rle = {"size": segmentation["size"],
               "counts": counts.encode() if isinstance(counts, str) else counts}
    with warnings.catch_warnings():  # pycocotools' decode warns under numpy 2 (copy keyword)
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def class_lookup(classes) -> np.ndarray:
    """int64 `[256]`: mask PNG value -> VPO id (0 background, 255 ignore); -1 for values no class owns."""
    lookup = np.full(256, -1, dtype=np.int64)
    lookup[0], lookup[IGNORE_INDEX] = 0, IGNORE_INDEX
    for c in classes:
        lookup[list(c.coco_category_ids)] = c.id
    return lookup


def remap_like_authors(values: np.ndarray, lookup: np.ndarray) -> np.ndarray:
    """CAVP's in-place remap: for each COCO id present (ascending, 0 and 255 skipped), every
    pixel that holds that value NOW becomes its VPO id, including pixels an earlier step wrote."""
    out = values.astype(np.int64)
    for coco_id in np.unique(values):
        if coco_id in (0, IGNORE_INDEX):
            continue
        out[out == coco_id] = lookup[coco_id]
    return out


def read_mask(path: Path, lookup: np.ndarray, remap: str = "correct") -> np.ndarray:
    """Mask PNG -> int64 `[H, W]` VPO class ids; 255 stays 255 (ignored by losses and metrics)."""
    from PIL import Image

    if remap not in REMAPS:
        raise UserError(f"data.vpo_remap '{remap}': expected one of {', '.join(REMAPS)}")
    if not path.is_file():
        raise UserError(f"{path}: mask not found")
    try:
        with Image.open(path) as img:
            values = np.asarray(img.convert("L") if img.mode not in ("L", "P") else img)
    except OSError as err:
        raise UserError(f"{path}: cannot decode the mask PNG ({err})") from err
    values = values.astype(np.int64)
    ids = lookup[values]
    if (ids < 0).any():
        bad = sorted(set(values[ids < 0].tolist()))[:5]
        raise UserError(f"{path}: mask values {bad} are no VPO class's COCO category id")
    return remap_like_authors(values, lookup) if remap == "authors" else ids


def read_image(path: Path):
    """The image as an RGB PIL image; UserError naming the file when missing or damaged."""
    from PIL import Image

    if not path.is_file():
        raise UserError(f"{path}: image not found")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except OSError as err:
        raise UserError(f"{path}: cannot decode the image ({err})") from err
