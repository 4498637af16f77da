"""CAVP's training step (`train.pairing: cavp`; docs/cavp.md, "The training step").

Per step and per process:
1. frames: `model.cavp.frames_per_clip` labelled frames drawn per clip (authors: one), each with
   the audio of its own second; N frames in all;
2. a random permutation gives every frame the audio of another frame (the shuffled pairs); a
   shuffled pair *matches* when both frames hold the same set of sounding classes;
3. from epoch `bank_start_epoch` on, a share `overwrite_rate` of the mismatched pairs whose frame
   holds exactly one class get that class's audio from the sound bank instead, and then match;
4. the bank takes the audio of every single-class frame of the batch (after step 3: the bank
   only ever gives audio of earlier steps);
5. targets: the original pairs keep their ground truth; a matching shuffled pair keeps the
   frame's ground truth, any other gets background everywhere;
6. one forward over 2N pairs (visual features once, the two audio inputs together), CE on the
   original half only, the contrastive loss on the fused features of both halves
   (`avseg.models.cavp_loss`).
The random draws use the step's generator (seeded by seed, step and rank); the bank is held by
each process for its own frames (no exchange between DDP ranks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable

import torch
from torch import Tensor, nn

from avseg.data.sample import Batch
from avseg.errors import UserError

IGNORE = 255


class SoundBank:
    """Per class, the audio inputs of the latest single-class frames: a first-in first-out queue of
    `size` entries; `pick` gives the oldest entry held (size 1: the latest), None for a class not
    seen yet. Entries are detached copies on the CPU."""

    def __init__(self, size: int = 1):
        if size < 1:
            raise ValueError(f"sound bank size must be at least 1, got {size}")
        self.size = size
        self.entries: dict[Hashable, list[Tensor]] = {}

    def push(self, key: Hashable, audio: Tensor) -> None:
        queue = self.entries.setdefault(key, [])
        queue.append(audio.detach().to("cpu", copy=True))
        del queue[:-self.size]

    def pick(self, key: Hashable) -> Tensor | None:
        queue = self.entries.get(key)
        return queue[0] if queue else None


def frame_classes(semantic: Tensor, categories: list | None = None) -> list[frozenset]:
    """The set of sounding classes of each frame `[N, H, W]` (ids other than 0 and 255). With
    `categories` (class-agnostic data that has them, S4), a frame's foreground counts as its
    clip's category."""
    out = []
    for i, frame in enumerate(semantic):
        ids = frozenset(int(v) for v in frame.unique().tolist()) - {0, IGNORE}
        if categories is not None and categories[i] is not None and ids:
            ids = frozenset({categories[i]})
        out.append(ids)
    return out


@dataclass
class CavpPairs:
    """The 2N pairs of a step: frames `[N, 1, 3, H, W]`, audio and paired_audio `[N, 1, ...]`,
    labels and paired_labels `[N, H, W]`, matched bool `[N]`, overwritten (count)."""

    frames: Tensor
    audio: Tensor
    paired_audio: Tensor
    labels: Tensor
    paired_labels: Tensor
    matched: Tensor
    overwritten: int


def select_frames(batch: Batch, per_clip: int, generator: torch.Generator | None) -> list[tuple[int, int]]:
    """(clip, frame) of the frames used: present and labelled, `per_clip` drawn per clip (0 = all)."""
    usable = batch.frame_present & batch.label_present
    chosen = []
    for clip in range(usable.shape[0]):
        frames = usable[clip].nonzero()[:, 0]
        if per_clip > 0 and len(frames) > per_clip:
            frames = frames[torch.randperm(len(frames), generator=generator)[:per_clip]]
        chosen += [(clip, int(t)) for t in sorted(frames.tolist())]
    return chosen


def make_pairs(batch: Batch, bank: SoundBank, *, per_clip: int, overwrite: bool, rate: float,
               class_agnostic: bool = False, generator: torch.Generator | None = None) -> CavpPairs:
    """Steps 1-5 of the module docstring on a CPU batch; `bank` is updated (step 4)."""
    chosen = select_frames(batch, per_clip, generator)
    if len(chosen) < 2:
        raise UserError(f"train.pairing=cavp: a batch has {len(chosen)} labelled frame(s); at least 2 are needed "
                        "(raise data.batch_size or model.cavp.frames_per_clip)")
    clips, times = (torch.tensor(v) for v in zip(*chosen))
    frames, audio = batch.frames[clips, times], batch.log_mel[clips, times]
    labels = batch.semantic[clips, times]
    categories = batch.extras.get("categories") if class_agnostic else None
    classes = frame_classes(labels, None if not categories else [categories[c] for c in clips.tolist()])
    order = torch.randperm(len(chosen), generator=generator)
    paired_audio = audio[order].clone()
    matched = torch.tensor([classes[i] == classes[j] for i, j in enumerate(order.tolist())])
    overwritten = 0
    if overwrite:
        mismatched = (~matched).nonzero()[:, 0]
        picked = mismatched[torch.randperm(len(mismatched), generator=generator)[: int(len(mismatched) * rate)]]
        for i in sorted(picked.tolist()):
            banked = bank.pick(next(iter(classes[i]))) if len(classes[i]) == 1 else None
            if banked is not None:
                paired_audio[i], matched[i] = banked, True
                overwritten += 1
    for i, own in enumerate(classes):
        if len(own) == 1:
            bank.push(next(iter(own)), audio[i])
    paired_labels = torch.where(matched[:, None, None], labels, torch.zeros_like(labels))
    return CavpPairs(frames[:, None], audio[:, None], paired_audio[:, None], labels, paired_labels, matched, overwritten)


class CavpPairing:
    """`train.pairing: cavp` for the Trainer: `losses(...)` runs steps 1-6 (module docstring)."""

    def __init__(self, config, class_agnostic: bool):
        c = config.model.cavp
        if config.model.name != "cavp":
            raise UserError(f"train.pairing=cavp needs model.name=cavp (got '{config.model.name}')")
        if config.train.contrastive_share > 0:
            raise UserError("train.contrastive_share is the empty-target pairing: set it to 0 with train.pairing=cavp")
        self.per_clip, self.rate, self.start = c.frames_per_clip, c.overwrite_rate, c.bank_start_epoch
        self.class_agnostic = class_agnostic
        self.bank = SoundBank(c.bank_size)

    def losses(self, model: nn.Module, batch: Batch, criterion: nn.Module, *, epoch: int, generator: torch.Generator,
               device: torch.device, autocast: Callable) -> tuple[dict[str, Tensor], int]:
        """(losses, number of shuffled pairs that match) of one training step."""
        pairs = make_pairs(batch, self.bank, per_clip=self.per_clip, overwrite=epoch >= self.start, rate=self.rate,
                           class_agnostic=self.class_agnostic, generator=generator)
        moved = {k: getattr(pairs, k).to(device, non_blocking=True)
                 for k in ("frames", "audio", "paired_audio", "labels", "paired_labels")}
        with autocast():
            outputs = model(frames=moved["frames"], log_mel=moved["audio"], paired_log_mel=moved["paired_audio"])
            losses = criterion(outputs, moved["labels"], paired_semantic=moved["paired_labels"], generator=generator)
        losses["overwritten"] = torch.tensor(float(pairs.overwritten), device=device)
        return losses, int(pairs.matched.sum())


def build_pairing(config, class_agnostic: bool) -> CavpPairing | None:
    """The CAVP pairing of a config (None for the empty-target pairing, `avseg.engine.pairing`)."""
    pairing = config.train.pairing
    if pairing not in ("empty_target", "cavp"):
        raise UserError(f"train.pairing '{pairing}': expected empty_target or cavp")
    return CavpPairing(config, class_agnostic) if pairing == "cavp" else None
