"""The one sample type every reader returns, and the collate function that batches it.

Every data set (S4, MS3, AVSS, VPO, the synthetic benchmark) is read into a `Sample`; the model,
losses and metrics only ever see `Sample`s and `Batch`es, never a data set's own layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor
from torchvision.ops import masks_to_boxes

from avseg.structures import BACKGROUND, IGNORE_INDEX, SOUNDING

__all__ = ["BACKGROUND", "SOUNDING", "Sample", "Batch", "targets_from_semantic", "collate_samples"]


@dataclass
class Sample:
    """One clip.

    Attributes:
        frames: float32 `[T, 3, H, W]`, ImageNet-normalised; padded slots are zeros.
        log_mel: the audio front end's features (`audio.frontend`). "vggish": float32
            `[T_a, 96, 64]`: for video data (AVSBench, synthetic) T_a = T, one VGGish example per
            frame slot (padded slots zeros); for VPO (one image, 3 s of audio) T = 1 and T_a = 3,
            the three examples of the clip. "cavp" (`avseg.audio.cavp_frontend`): float32
            `[T_a, C, F, 64]`: VPO and Single+ `[1, C, 300, 64]` (3 s; VPO stereo C = 2), AVSS
            `[10, 1, 96, 64]` (ten 1 s chunks, one per frame slot).
        semantic: int64 `[T, H, W]`, class id per pixel (0 = background; 1 = "sounding" in
            class-agnostic data; 255 = ignore, `IGNORE_INDEX`: no loss or metric counts the
            pixel). Zeros where `label_present` is False.
        masks: length T; `masks[t]` is bool `[N_t, H, W]`, one mask per sounding object of frame t
            (semantic data: one per class present; class-agnostic data: the whole foreground).
        labels: length T; `labels[t]` is int64 `[N_t]`, the class id of each mask (>= 1).
        frame_present: bool `[T]`, False for zero-padded frame slots.
        label_present: bool `[T]`, True where frame t has ground truth.
        clip_id: the clip's id as the data set names it (video id / uid / image id).
        dataset: "s4", "ms3", "avss", "single_plus_cavp", "vpo_ss", "vpo_ms" or "vpo_msmi".
        subset: AVSS subset ("v1s", "v1m", "v2") or None.
        category: the clip's category where the layout has one (S4) or None.
        waveform: optional float32 `[samples]` mono audio at 16 kHz (readers load it on request).
        native_semantic: with `data.resize: longest_side` (evaluation): the labels at the frames'
            own size `[T, H0, W0]`, for scoring there; None otherwise.
        content_size: with `data.resize: longest_side`: (h, w) of the image in the padded
            `[H, W]` canvas (top-left); the rest is padding, out of the metrics.
    """

    frames: Tensor
    log_mel: Tensor
    semantic: Tensor
    masks: list[Tensor]
    labels: list[Tensor]
    frame_present: Tensor
    label_present: Tensor
    clip_id: str
    dataset: str
    subset: str | None = None
    category: str | None = None
    waveform: Tensor | None = None
    native_semantic: Tensor | None = None
    content_size: tuple[int, int] | None = None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    def boxes(self, t: int) -> Tensor:
        """Boxes of frame t's objects: float32 `[N_t, 4]` as (x0, y0, x1, y1) in pixels."""
        masks = self.masks[t]
        if masks.shape[0] == 0:
            return torch.zeros((0, 4), dtype=torch.float32)
        return masks_to_boxes(masks.to(torch.uint8))


def targets_from_semantic(semantic: Tensor) -> tuple[Tensor, Tensor]:
    """Split one frame's class-id map `[H, W]` into per-class masks `[N, H, W]` and ids `[N]`
    (background 0 and ignored pixels, `IGNORE_INDEX` 255, are no class)."""
    class_ids = torch.unique(semantic)
    class_ids = class_ids[(class_ids != BACKGROUND) & (class_ids != IGNORE_INDEX)]
    masks = semantic.unsqueeze(0) == class_ids.view(-1, 1, 1)
    return masks, class_ids.to(torch.int64)


@dataclass
class Batch:
    """A batch of B clips with T frame slots each.

    frames `[B, T, 3, H, W]`, log_mel `[B, T, 96, 64]`, semantic `[B, T, H, W]`,
    frame_present / label_present `[B, T]`, targets[b][t] = {"masks": [N, H, W], "labels": [N]},
    waveform `[B, S]` (zero-padded to the longest) or None.
    """

    frames: Tensor
    log_mel: Tensor
    semantic: Tensor
    frame_present: Tensor
    label_present: Tensor
    targets: list[list[dict[str, Tensor]]]
    clip_ids: list[str]
    datasets: list[str]
    waveform: Tensor | None = None
    extras: dict = field(default_factory=dict)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        def move(x):
            return x.to(device, non_blocking=non_blocking)

        return Batch(
            frames=move(self.frames),
            log_mel=move(self.log_mel),
            semantic=move(self.semantic),
            frame_present=move(self.frame_present),
            label_present=move(self.label_present),
            targets=[[{k: move(v) for k, v in t.items()} for t in clip] for clip in self.targets],
            clip_ids=list(self.clip_ids),
            datasets=list(self.datasets),
            waveform=None if self.waveform is None else move(self.waveform),
            extras=dict(self.extras),
        )


def collate_samples(samples: list[Sample]) -> Batch:
    """Stack samples of equal T and image size into a `Batch`."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    waveform = None
    if all(s.waveform is not None for s in samples):
        length = max(int(s.waveform.shape[0]) for s in samples)
        waveform = torch.zeros((len(samples), length), dtype=torch.float32)
        for i, s in enumerate(samples):
            waveform[i, : s.waveform.shape[0]] = s.waveform
    extras = {}
    if all(s.native_semantic is not None for s in samples):  # longest-side evaluation
        extras = {"native_semantic": [s.native_semantic for s in samples],
                  "content_size": [s.content_size for s in samples]}
    return Batch(
        frames=torch.stack([s.frames for s in samples]),
        log_mel=torch.stack([s.log_mel for s in samples]),
        semantic=torch.stack([s.semantic for s in samples]),
        frame_present=torch.stack([s.frame_present for s in samples]),
        label_present=torch.stack([s.label_present for s in samples]),
        targets=[
            [{"masks": m, "labels": l} for m, l in zip(s.masks, s.labels)] for s in samples
        ],
        clip_ids=[s.clip_id for s in samples],
        datasets=[s.dataset for s in samples],
        waveform=waveform,
        extras=extras,
    )
