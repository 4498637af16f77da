"""Predicted masks in the reference layout, and overlays, written during `avseg eval`.

Masks go to the same relative paths as the ground truth under the output folder, so a tool that
reads the release's masks reads the predictions too:

    S4 / MS3   binary PNG (mode L, 0 / 255)          e.g. s4_data/gt_masks/test/dog/abc/abc_1.png
    AVSS       RGB PNG in the AVSBench palette       e.g. v2/{uid}/labels_rgb/3.png
    VPO        PNG of COCO category ids (as the release's masks)   e.g. VPO-SS/mask/dog/..._....png

Frames without a ground-truth file (none on val / test) are not written. Predictions are at the
evaluation size (`data.image_size`). Overlays: `DIR/{clip_id}/{t}.png`, the frame with each
predicted class's colour blended in (binary: red).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from avseg.config import Config
from avseg.data.palette import ids_to_rgb, voc_palette
from avseg.data.datasets import is_binary
from avseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD

OVERLAY_ALPHA = 0.5
BINARY_COLOUR = (255, 0, 0)


def _reader(dataset):
    """The innermost data set (the reader that knows the files)."""
    while hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    return dataset


class PredictionWriter:
    """Writes masks (`masks_dir`) and overlays (`overlays_dir`) of each evaluated batch."""

    def __init__(self, dataset, config: Config, class_names: list[str], masks_dir=None, overlays_dir=None):
        self.reader = _reader(dataset)
        self.dataset_name = config.data.dataset
        self.num_classes = len(class_names)
        self.masks_dir = Path(masks_dir) if masks_dir else None
        self.overlays_dir = Path(overlays_dir) if overlays_dir else None
        self.palette = voc_palette(max(self.num_classes, 2))
        self.vpo_values = None
        if self.dataset_name.startswith("vpo_"):
            lookup = np.zeros(self.num_classes, dtype=np.uint8)
            for c in self.reader.classes:
                lookup[c.id] = c.coco_category_ids[0]
            self.vpo_values = lookup

    def _mask_paths(self, index: int) -> list[Path | None]:
        """Ground-truth paths of item `index`, relative to the data set root, per frame slot."""
        root = Path(self.reader.root)
        if hasattr(self.reader, "mask_paths"):  # readers that say so themselves (Single+, CAVP's layout)
            return self.reader.mask_paths(index)
        if hasattr(self.reader, "clips"):
            return [None if p is None else Path(p).relative_to(root) for p in self.reader.clips[index].masks]
        return [Path(self.reader.items[index].mask).relative_to(root)]

    def _mask_image(self, ids: np.ndarray) -> Image.Image:
        if is_binary(self.dataset_name):
            return Image.fromarray((ids > 0).astype(np.uint8) * 255, mode="L")
        if self.vpo_values is not None:
            return Image.fromarray(self.vpo_values[ids], mode="L")
        return Image.fromarray(ids_to_rgb(ids, len(self.palette)))

    def _overlay(self, frame: torch.Tensor, ids: np.ndarray) -> Image.Image:
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        rgb = ((frame.float().cpu() * std + mean).clamp(0, 1) * 255).permute(1, 2, 0).numpy()
        if is_binary(self.dataset_name):
            colours = np.zeros((*ids.shape, 3), dtype=np.float32)
            colours[ids > 0] = BINARY_COLOUR
        else:
            colours = self.palette[ids.clip(0, len(self.palette) - 1)].astype(np.float32)
        blended = np.where((ids > 0)[..., None], (1 - OVERLAY_ALPHA) * rgb + OVERLAY_ALPHA * colours, rgb)
        return Image.fromarray(blended.round().astype(np.uint8))

    def write(self, batch, prediction: dict) -> None:
        """Write the masks / overlays of one batch (needs `batch.extras["indices"]`)."""
        ids = prediction["ids"].view(*batch.semantic.shape).cpu().numpy()
        indices = batch.extras["indices"]
        vpo = self.vpo_values is not None
        for b, index in enumerate(indices):
            clip_ids, frames = ids[b], batch.frames[b]
            if "content_size" in batch.extras:  # longest side: the image part, padding cut off
                height, width = batch.extras["content_size"][b]
                clip_ids, frames = clip_ids[:, :height, :width], frames[..., :height, :width]
            if vpo:  # T copies of one image: majority over the copies
                clip_ids = torch.from_numpy(clip_ids).mode(dim=0).values.numpy()[None]
            paths = self._mask_paths(index)
            for t in range(clip_ids.shape[0]):
                if not bool(batch.frame_present[b, t]):
                    continue
                if self.masks_dir is not None and t < len(paths) and paths[t] is not None:
                    out = self.masks_dir / paths[t].with_suffix(".png")
                    out.parent.mkdir(parents=True, exist_ok=True)
                    self._mask_image(clip_ids[t]).save(out)
                if self.overlays_dir is not None:
                    out = self.overlays_dir / batch.clip_ids[b] / f"{t}.png"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    self._overlay(frames[t], clip_ids[t]).save(out)
