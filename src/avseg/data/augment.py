"""CAVP's training augmentation, on `Sample`s (`data.train_augment: cavp`; docs/cavp-data.md).

The authors' loaders (cyh-0/CAVP, `dataset/*/visual/visual_aug.py`, `train_aug`) do, in order:

1. a horizontal flip with probability 0.5; in the stereo VPO-MS / MSMI loaders the flip also
   mirrors each source's `audio_pos` (pos -> 1 - pos), which for the (1 - pos, pos) stereo mix is
   the same as swapping the left and right channels;
2. a random rescale by one factor drawn from a list: COCO images (VPO) 0.5, 0.75, ..., 2.0;
   AVSBench ("avs" / "avss" setups) 0.5, 0.75, 1.0; image bicubic, label nearest,
   `int(side * scale)`;
3. on VPO only, a colour jitter (brightness 0.5, contrast 0.5, saturation 0.5, hue 0.25);
4. when a side is shorter than the crop, padding on the right / bottom: image with the ImageNet
   mean colour, label with 255 (ignore);
5. a random `crop x crop` window (512 in their configs).

Here the same steps run on a `Sample`'s tensors, one draw per clip for all of its frames (the
authors draw one labelled frame per clip, so for one frame this is their transform). Padding
is 0 in ImageNet-normalised frames (the mean colour), 255 in the label maps of labelled frames
(unlabelled and padded slots stay 0), False in per-object masks; an object whose mask leaves the
crop is dropped from the targets. The stereo swap applies to CAVP front-end features
`[T_a, 2, F, 64]` (channel order is the only thing the flip changes in them); mono features and
VGGish log-mels are left as they are. Randomness comes from torch's global generator, which
`EpochSeededDataset` seeds per (seed, epoch, sample).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import ColorJitter, InterpolationMode
from torchvision.transforms.v2 import functional as F

from avseg.data.sample import Sample
from avseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from avseg.structures import IGNORE_INDEX

AUGMENTS = ("none", "cavp")
COCO_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)  # the authors' VPO ("COCO") list
AVS_SCALES = (0.5, 0.75, 1.0)  # their AVSBench list
JITTER = {"brightness": 0.5, "contrast": 0.5, "saturation": 0.5, "hue": 0.25}


@dataclass(frozen=True)
class CavpAugment:
    """Flip, rescale, (jitter), pad and crop one `Sample` as CAVP's training loaders do.

    Args:
        size: crop side (`data.image_size`; the authors' 512).
        scales: the rescale factors, one drawn per clip (`COCO_SCALES` or `AVS_SCALES`).
        color_jitter: the authors' colour jitter (their VPO loaders; not on AVSBench).
        flip_prob: probability of the horizontal flip (0.5 in their code).
    """

    size: int
    scales: tuple[float, ...] = AVS_SCALES
    color_jitter: bool = False
    flip_prob: float = 0.5

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be a positive number of pixels, got {self.size}")
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"scales must be positive factors, got {self.scales}")

    def __call__(self, sample: Sample) -> Sample:
        frames, semantic = sample.frames, sample.semantic
        masks = list(sample.masks)
        log_mel = sample.log_mel
        if float(torch.rand(())) < self.flip_prob:
            frames, semantic = frames.flip(-1), semantic.flip(-1)
            masks = [m.flip(-1) for m in masks]
            if log_mel.dim() == 4 and log_mel.shape[1] == 2:  # CAVP stereo: left <-> right
                log_mel = log_mel.flip(1)
        scale = self.scales[int(torch.randint(len(self.scales), ()))]
        height, width = (int(side * scale) for side in frames.shape[-2:])
        frames = F.resize(frames, [height, width], interpolation=InterpolationMode.BICUBIC, antialias=True)
        semantic = _resize_ids(semantic, height, width)
        masks = [_resize_ids(m, height, width).bool() for m in masks]
        if self.color_jitter:
            frames = _jitter(frames, sample.frame_present)
        pad_h, pad_w = max(self.size - height, 0), max(self.size - width, 0)
        if pad_h or pad_w:
            frames = F.pad(frames, [0, 0, pad_w, pad_h], fill=0.0)
            semantic = F.pad(semantic, [0, 0, pad_w, pad_h], fill=0)
            semantic[sample.label_present, height:, :] = IGNORE_INDEX
            semantic[sample.label_present, :, width:] = IGNORE_INDEX
            masks = [F.pad(m, [0, 0, pad_w, pad_h], fill=False) for m in masks]
        full_h, full_w = frames.shape[-2:]
        top = int(torch.randint(full_h - self.size + 1, ()))
        left = int(torch.randint(full_w - self.size + 1, ()))
        window = (slice(top, top + self.size), slice(left, left + self.size))
        frames = frames[..., window[0], window[1]].contiguous()
        semantic = semantic[..., window[0], window[1]].contiguous()
        kept_masks, kept_labels = [], []
        for m, labels in zip(masks, sample.labels):
            m = m[..., window[0], window[1]]
            keep = m.flatten(1).any(dim=1) if m.shape[0] else torch.zeros(0, dtype=torch.bool)
            kept_masks.append(m[keep].contiguous())
            kept_labels.append(labels[keep])
        return replace(sample, frames=frames, semantic=semantic, masks=kept_masks, labels=kept_labels,
                       log_mel=log_mel)


def _resize_ids(ids: Tensor, height: int, width: int) -> Tensor:
    """Nearest-neighbour resize of an id map / mask stack `[..., H, W]` (pixel centres, as PIL)."""
    if tuple(ids.shape[-2:]) == (height, width):
        return ids
    if ids.shape[0] == 0:
        return ids.new_zeros((*ids.shape[:-2], height, width))
    out = F.resize(ids.to(torch.uint8), [height, width], interpolation=InterpolationMode.NEAREST_EXACT)
    return out.to(ids.dtype)


def _jitter(frames: Tensor, present: Tensor) -> Tensor:
    """The authors' ColorJitter on the present frames (one draw for all of them), in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    out = frames.clone()
    pixels = (frames[present] * std + mean).clamp(0.0, 1.0)
    out[present] = (ColorJitter(**JITTER)(pixels) - mean) / std
    return out


def cavp_augment_for(dataset: str, size: int) -> CavpAugment:
    """The authors' setting for a data set: their "COCO" setups (VPO, and Single+, which runs
    with the VPO-SS command: `--setup vpo_ss`) 0.5-2 with colour jitter; AVSS, S4 / MS3 and the
    synthetic benchmark (their "avs" / "avss" setups) 0.5-1 without."""
    coco = dataset.startswith("vpo_") or dataset == "single_plus_cavp"
    return CavpAugment(size=size, scales=COCO_SCALES if coco else AVS_SCALES, color_jitter=coco)


class AugmentedDataset(Dataset):
    """A reader's samples passed through an augmentation (the train split's)."""

    def __init__(self, dataset: Dataset, augment: CavpAugment):
        self.dataset, self.augment = dataset, augment

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        return self.augment(self.dataset[index])

    def __getattr__(self, name: str):  # the reader's own attributes (items, classes, mask_paths...)
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)
