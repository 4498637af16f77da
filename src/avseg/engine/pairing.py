"""The empty-target pairing (`train.contrastive_share`; CAVP's own pairing is `train.pairing: cavp`,
`avseg.engine.cavp_pairing`, docs/cavp.md says how the two differ).

A share of each training batch is replaced by mismatched pairs: a clip's frames with the audio of
another clip that shares no sounding class with it. Nothing in those frames makes that sound, so
the target is "nothing sounds": an all-background map and no objects. The frames with a known
target are every real frame of the clip (`label_present = frame_present`): the empty target is
known for all of them, so it is supervised on all of them. A model that segments salient objects
whatever the audio is punished.

Partners are chosen inside the batch. Semantic data: the clip's classes are the labels of its
targets over all frames; the partner's set must be disjoint from it (falling back to any different
set, then to no pairing). Class-agnostic data (S4, MS3): a clip of another category when the data
set has categories (S4), any other clip otherwise (MS3).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from avseg.data.sample import Batch
from avseg.engine.step import compute_losses, forward_batch


def clip_classes(batch: Batch) -> list[frozenset[int]]:
    """The set of sounding class ids of each clip (labels of its targets over all frames)."""
    return [
        frozenset(int(label) for frame in clip for label in frame["labels"].tolist())
        for clip in batch.targets
    ]


def _candidates(i: int, batch: Batch, classes: list[frozenset[int]], class_agnostic: bool) -> list[list[int]]:
    """Partner candidates of clip i, best tier first."""
    others = [j for j in range(len(classes)) if j != i]
    if class_agnostic:
        categories = batch.extras.get("categories") or [None] * len(classes)
        if categories[i] is not None:
            return [[j for j in others if categories[j] is not None and categories[j] != categories[i]]]
        return [others]
    disjoint = [j for j in others if classes[j] and not (classes[j] & classes[i])]
    different = [j for j in others if classes[j] != classes[i] and j not in disjoint]
    return [disjoint, different]


def contrastive_pairs(
    batch: Batch,
    share: float,
    *,
    class_agnostic: bool,
    generator: torch.Generator | None = None,
) -> Batch:
    """A copy of `batch` where round(share * B) clips carry another clip's audio and empty targets.

    Args:
        batch: the batch (any device); it is not modified.
        share: fraction of the B clips to replace, in [0, 1].
        class_agnostic: S4 / MS3 data (partners by category or clip, not by class).
        generator: CPU generator for the choice of clips and partners (reproducible runs).

    Returns:
        The new batch; `extras["paired"]` lists (clip index, audio partner index) of every
        replaced clip (fewer than asked when some clips have no eligible partner).
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"contrastive share must lie in [0, 1], got {share}")
    size = len(batch.clip_ids)
    wanted = int(round(share * size))
    out = _copy(batch)
    out.extras["paired"] = []
    if wanted == 0 or size < 2:
        return out
    classes = clip_classes(batch)
    order = torch.randperm(size, generator=generator).tolist()
    for i in order:
        if len(out.extras["paired"]) == wanted:
            break
        for tier in _candidates(i, batch, classes, class_agnostic):
            if tier:
                j = tier[int(torch.randint(len(tier), (), generator=generator))]
                _pair(out, batch, i, j)
                out.extras["paired"].append((i, j))
                break
    return out


def _copy(batch: Batch) -> Batch:
    return Batch(
        frames=batch.frames,
        log_mel=batch.log_mel.clone(),
        semantic=batch.semantic.clone(),
        frame_present=batch.frame_present,
        label_present=batch.label_present.clone(),
        targets=[list(clip) for clip in batch.targets],
        clip_ids=list(batch.clip_ids),
        datasets=list(batch.datasets),
        waveform=None if batch.waveform is None else batch.waveform.clone(),
        extras=dict(batch.extras),
    )


def _empty_target(target: dict[str, Tensor]) -> dict[str, Tensor]:
    masks = target["masks"]
    return {"masks": masks.new_zeros((0, *masks.shape[1:])), "labels": target["labels"].new_zeros((0,))}


def _pair(out: Batch, source: Batch, i: int, j: int) -> None:
    """Clip i keeps its frames, takes clip j's audio, and gets the 'nothing sounds' target."""
    out.log_mel[i] = source.log_mel[j]
    if out.waveform is not None:
        out.waveform[i] = source.waveform[j]
    out.semantic[i] = 0
    out.targets[i] = [_empty_target(target) for target in source.targets[i]]
    out.label_present[i] = source.frame_present[i]


def paired_losses(model: nn.Module, batch: Batch, criterion: nn.Module, *, share: float, class_agnostic: bool,
                  generator: torch.Generator, device: torch.device, autocast: Callable) -> tuple[dict[str, Tensor], int]:
    """(losses, number of paired clips) of a training step: the batch as it is (share 0) or with
    the empty-target pairing; `batch` is on the CPU, moved to `device` here."""
    if share > 0:
        batch = contrastive_pairs(batch, share, class_agnostic=class_agnostic, generator=generator)
    paired = len(batch.extras.get("paired", []))
    batch = batch.to(device, non_blocking=True)
    with autocast():
        outputs = forward_batch(model, batch)
        return compute_losses(outputs, batch, criterion, class_agnostic=class_agnostic), paired
