"""Trivial baselines, measured on the same clips and with the same metric as a trained model.

- "all background": nothing is segmented;
- "every object": every visible object is segmented with its class, sounding or silent, i.e. a
  perfect segmenter that ignores the audio (needs the synthetic benchmark's `_synth/` extras);
- "shuffled audio": the trained model, with each clip's audio replaced by another clip's.

A model that does not clearly beat all three has not learned to listen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avseg.config import Config
from avseg.engine.step import forward_batch
from avseg.errors import UserError

BASELINES = ("all_background", "every_object", "shuffled_audio")


def every_object_ids(synth_root: Path, clip_ids: list[str], slots: int, size: tuple[int, int], binary: bool) -> Tensor:
    """Class ids of every visible object (sounding or not) `[B*T, H, W]`, from `_synth/clips/*.npz`."""
    maps = []
    for clip_id in clip_ids:
        path = Path(synth_root) / "_synth" / "clips" / f"{clip_id}.npz"
        if not path.is_file():
            raise UserError(f"{path}: missing; the 'every object' baseline needs data written by avseg synth")
        with np.load(path) as extras:
            instances, class_ids = extras["instances"].astype(np.int64), extras["class_ids"].astype(np.int64)
        lookup = np.concatenate([[0], np.ones_like(class_ids) if binary else class_ids])
        ids = torch.from_numpy(lookup[instances])  # [T, h, w]
        ids = F.interpolate(ids[:, None].float(), size=size, mode="nearest")[:, 0].long()
        padded = torch.zeros((slots, *size), dtype=torch.long)
        padded[: ids.shape[0]] = ids
        maps.append(padded)
    return torch.cat(maps)


def shuffled_audio_batch(batch, previous):
    """The batch with every clip's audio taken from another clip: the previous clip of the batch
    (a derangement when B >= 2), or for a batch of one clip the previous batch's first clip.
    Returns None for a one-clip first batch (no other audio seen yet)."""
    shuffled = batch.to(batch.frames.device)
    if batch.log_mel.shape[0] >= 2:
        shuffled.log_mel = batch.log_mel.roll(1, dims=0)
        shuffled.waveform = None if batch.waveform is None else batch.waveform.roll(1, dims=0)
    elif previous is not None and previous.log_mel.shape[1:] == batch.log_mel.shape[1:]:
        shuffled.log_mel = previous.log_mel[:1]
        shuffled.waveform = None if previous.waveform is None else previous.waveform[:1, : batch.waveform.shape[1]]
    else:
        return None
    return shuffled


@torch.no_grad()
def evaluate_baselines(model: nn.Module, loader, config: Config, *, synth_root: str | Path | None,
                       split: str, device: torch.device | None = None) -> dict[str, dict]:
    """The metrics of each baseline over `loader` (an `evaluation_loader`): {name: metric dict}.

    "every_object" is left out when `synth_root` is None (real data has no such extras).
    """
    from avseg.data.build import class_names
    from avseg.engine.evaluate import TaskMetric, labelled_frames_per_clip, predict, task_of

    device = device or next(model.parameters()).device
    task = task_of(config.data.dataset)
    names = class_names(config)
    wanted = [b for b in BASELINES if b != "every_object" or synth_root is not None]
    metrics = {b: TaskMetric(task, len(names), labelled_frames_per_clip(config, split)) for b in wanted}
    model.eval()
    previous = None
    for batch, _damaged in loader:
        if batch is None:
            continue
        batch = batch.to(device)
        size = tuple(batch.semantic.shape[-2:])
        frames = batch.semantic.flatten(0, 1).shape[0]
        zeros = torch.zeros((frames, *size), device=device)
        metrics["all_background"].update(batch, {"foreground": zeros, "ids": zeros.long()})
        if "every_object" in metrics:
            ids = every_object_ids(synth_root, batch.clip_ids, batch.frames.shape[1], size, task == "binary").to(device)
            metrics["every_object"].update(batch, {"foreground": (ids > 0).float(), "ids": ids})
        shuffled = shuffled_audio_batch(batch, previous)
        if shuffled is not None:
            metrics["shuffled_audio"].update(batch, predict(forward_batch(model, shuffled), task, size))
        previous = batch
    return {name: metric.compute() for name, metric in metrics.items()}
