"""From a model's outputs for one frame to what `avseg predict` reports: a class map and objects.

The maps come from `avseg.models.postprocess.segment`, the one rule that `avseg eval` scores too
(tests/inference/test_one_rule.py checks that the maps are equal); this module only adds the
objects (class, score, box) and keeps memory bounded for large frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avseg.data.transforms import content_size
from avseg.models.postprocess import segment

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


def frame_objects(maps: dict[str, Tensor], rules: OutputRules) -> list[tuple[dict, np.ndarray]]:
    """The objects of one frame's maps (from `segment`, F = 1): [(entry, its pixels `[H, W]`)].

    QSD: one object per token that labels at least one pixel: its class and score s_k. TPAVI:
    one object per class present, scored by the mean probability of that class over its pixels.
    """
    labels = maps["ids"][0]
    objects = []
    if "token" in maps:
        token = maps["token"][0]
        for k in torch.unique(token[token >= 0]).tolist():
            class_id = 1 if rules.binary else int(maps["token_class"][0, k])
            objects.append((rules.entry(class_id, float(maps["token_score"][0, k])), (token == k).cpu().numpy()))
        return objects
    probs = maps["probs"][0]
    for class_id in torch.unique(labels).tolist():
        if class_id:
            where = labels == class_id
            objects.append((rules.entry(class_id, float(probs[class_id][where].mean())), where.cpu().numpy()))
    return objects


def to_frame_size(maps: dict[str, Tensor], content: tuple[int, int], size: tuple[int, int],
                  binary: bool) -> dict[str, Tensor]:
    """Longest-side input (`data.resize: longest_side`): maps of the padded square -> the frame.

    The padding is cut off (`content` = (h, w) of the image in the square) and the rest resized to
    `size`, as `avseg eval` does with the labels (`engine.evaluate.at_label_size`): on binary data
    the foreground probability bilinearly, thresholded at 0.5 after; class ids and the token map
    with nearest neighbour; TPAVI's probabilities bilinearly.
    """
    height, width = content
    out = {key: value for key, value in maps.items() if key in ("token_score", "token_class")}
    cut = {key: value[..., :height, :width] for key, value in maps.items() if key not in out}
    for key in ("foreground", "probs"):
        if key in cut:
            part = cut[key] if key == "probs" else cut[key].unsqueeze(1)
            part = F.interpolate(part.float(), size=size, mode="bilinear", align_corners=False)
            out[key] = part if key == "probs" else part[:, 0]
    for key in ("ids", "token"):
        if key in cut:
            out[key] = F.interpolate(cut[key].unsqueeze(1).float(), size=size, mode="nearest")[:, 0].long()
    if binary:
        out["ids"] = (out["foreground"] > 0.5).long()
        if "token" in out:
            out["token"] = torch.where(out["ids"] > 0, out["token"], torch.full_like(out["token"], -1))
    return out


@torch.no_grad()
def frame_output(outputs: dict, f: int, size: tuple[int, int], rules: OutputRules,
                 padded_side: int | None = None) -> tuple[np.ndarray, list[dict]]:
    """Output frame `f` of a model call -> (class ids `[H, W]` at `size`, objects best first).

    Maps are computed at `size` (the input's), or, above MAX_POSTPROCESS_PIXELS, at a smaller
    size of the same aspect and upscaled (nearest), so memory per frame stays bounded.
    `padded_side`: the frame reached the model resized to that longest side and padded to a square
    (`data.resize: longest_side`); the maps are made at the square's size, cut and resized
    (`to_frame_size`), as `avseg eval` scores them.
    Objects: `{"class", "class_id", "score", "box": [x0, y0, x1, y1]}` in input pixels.
    """
    height, width = size
    shrink = min(1.0, (MAX_POSTPROCESS_PIXELS / (height * width)) ** 0.5)
    work = (max(1, round(height * shrink)), max(1, round(width * shrink)))
    keys = ("semantic_logits",) if "semantic_logits" in outputs else ("pred_logits", "pred_masks")
    square = None if padded_side is None else (padded_side, padded_side)
    maps = segment({key: outputs[key][f : f + 1] for key in keys}, binary=rules.binary,
                   size=work if square is None else square,
                   mask_threshold=rules.mask_threshold, score_threshold=rules.score_threshold)
    if square is not None:
        maps = to_frame_size(maps, content_size(width, height, padded_side), work, rules.binary)
    labels, found = maps["ids"][0], frame_objects(maps, rules)
    scale = (height / work[0], width / work[1])
    objects = sorted(({**obj, "box": box_of(mask, scale)} for obj, mask in found), key=lambda o: -o["score"])
    if work != (height, width):
        labels = F.interpolate(labels[None, None].float(), size=(height, width), mode="nearest")[0, 0].long()
    dtype = np.uint8 if len(rules.class_names) <= 256 else np.int32
    return labels.cpu().numpy().astype(dtype), objects
