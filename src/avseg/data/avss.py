"""Reader of AVSBench-Semantic (AVSS): subsets v1s, v1m and v2, and CAVP's AVSBench-Single+.

ROOT is the `AVSBench_semantic` folder (paths: `avseg.data.layouts`). Labels are RGB images in
the VOC-style palette (`avseg.data.palette`); colours outside the palette read as background, as
in the reference. Every clip is padded to `pad_to` (10) frame slots, as the reference does, with
two flags per slot:

    subset  split       frame_present     label_present
    v1s     train       [1]*5 + [0]*5     [1] + [0]*9
    v1s     val/test    [1]*5 + [0]*5     [1]*5 + [0]*5
    v1m     any         [1]*5 + [0]*5     [1]*5 + [0]*5
    v2      any         [1]*10            [1]*10

v1s val/test: the release has ground truth on all 5 frames. OpenNLPLab's loader still sets the
ground-truth flag to [1] + [0]*9 there, yet loads and evaluates all 5 label maps; CAVP's loader
sets [1]*5 + [0]*5. We follow the files (and CAVP): `label_present` is True where a label exists.

Labels: `labels_semantic/{i}.png` (class ids, 255 = ignore) where a clip has that folder, as
CAVP's loader reads them; else `labels_rgb/{i}.png` in the palette.

Audio: `frontend="vggish"`: one VGGish example per frame slot from the wav; `"cavp"`: CAVP's
AVSS features `[slots, 1, 96, 64]` (`avseg.audio.cavp_frontend.avss_chunks`: the channel mean,
its 10 s centre crop, one 1 s chunk per slot; as the authors, a 5 s clip is tiled by their rule,
so chunk t is not second t there).

Padded slots hold zero frames, zero log-mel examples and an all-background semantic map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from avseg.data import layouts
from avseg.data.avsbench import (
    frames_tensor,
    list_split_clips,
    longest_side_labels,
    pad_examples,
    pick_transform,
    read_audio,
    read_image,
    split_targets,
)
from avseg.data.layouts import LayoutError
from avseg.data.palette import rgb_to_ids
from avseg.data.sample import Sample
from avseg.data.transforms import ClipTransform
from avseg.data.vpo import FRONTENDS
from avseg.errors import UserError


def read_class_names(root: Path) -> list[str]:
    """Class names indexed by class id, from ROOT/label2idx.json (UserError if unusable)."""
    try:
        mapping = layouts.read_label2idx(root)
    except LayoutError as err:
        raise UserError(str(err).replace(f"{Path(root)}/", "")) from err
    if not mapping or min(mapping.values()) < 0:
        raise UserError(f"{layouts.AVSS_LABELS}: expected class ids >= 0, background = 0")
    names = [""] * (max(mapping.values()) + 1)
    for name, class_id in mapping.items():
        names[class_id] = name
    return names


def _label_image(image, label_ids: bool):
    """labels_semantic: the bytes as they are (modes L / P hold the ids); labels_rgb: RGB."""
    if label_ids:
        return image if image.mode in ("L", "P") else image.convert("L")
    return image.convert("RGB")


class AVSSDataset(Dataset):
    """AVSBench-Semantic clips as `Sample`s with `pad_to` frame slots.

    Returns frames `[P, 3, S, S]`, log_mel `[P, 96, 64]` (one example per second of the real
    frames, from the wav), semantic int64 `[P, S, S]` with class ids (0 = background),
    per-frame masks/labels, and the flags in the module docstring (P = pad_to, S = image_size).

    Args:
        root: the AVSBench-Semantic folder (holds `metadata.csv` and `label2idx.json`).
        split: "train", "val" or "test".
        subsets: which of "v1s", "v1m", "v2" to read (the csv's `label` column).
        image_size: output side length of frames and label maps.
        pad_to: frame slots per clip (10 as the reference; at least the longest subset read).
        train_transforms: transform of the train split (default: the reference's crop-resize,
            short side to image_size then a centre crop, no flip). Val/test: `resize`.
        resize: evaluation resize of val / test: "square" or "longest_side" (`data.resize`).
        load_waveform: also return the mono 16 kHz waveform in `Sample.waveform`.
        frontend: audio features, "vggish" or "cavp" (module docstring); another name is a UserError.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        subsets: tuple[str, ...] = layouts.AVSS_SUBSETS,
        image_size: int = 224,
        pad_to: int = layouts.AVSS_SLOTS,
        train_transforms: ClipTransform | None = None,
        load_waveform: bool = False,
        resize: str = "square",
        frontend: str = "vggish",
    ) -> None:
        if frontend not in FRONTENDS:
            raise UserError(f"audio.frontend '{frontend}': expected one of {', '.join(FRONTENDS)}")
        subsets = tuple(subsets)
        unknown = [name for name in subsets if name not in layouts.AVSS_FRAMES]
        if unknown or not subsets:
            raise UserError(f"unknown AVSS subset(s) {unknown or subsets}; expected some of v1s, v1m, v2")
        longest = max(layouts.AVSS_FRAMES[name] for name in subsets)
        if pad_to < longest:
            raise ValueError(f"pad_to={pad_to} is shorter than the {longest} frames of subset(s) {subsets}")
        self.root = Path(root)
        self.split = split
        self.subsets = subsets
        self.image_size = image_size
        self.pad_to = pad_to
        self.load_waveform = load_waveform
        self.frontend = frontend
        self.transform = pick_transform("avss", split, image_size, train_transforms, resize)
        self.clips = list_split_clips(self.root, "avss", split, subsets)
        self.class_names = read_class_names(self.root)

    @property
    def num_classes(self) -> int:
        """Number of classes, background included (71 for the official release)."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.clips)

    def _ids(self, label, label_ids: bool) -> np.ndarray:
        """Class ids `[H, W]` of a label image: its bytes (labels_semantic) or its palette colours."""
        if label_ids:
            return np.asarray(label).astype(np.int64)
        return rgb_to_ids(np.asarray(label), self.num_classes)[0]

    def __getitem__(self, index: int) -> Sample:
        clip = self.clips[index]
        frames = [read_image(path, self.root) for path in clip.frames]
        labels = [None if path is None else _label_image(read_image(path, self.root), clip.label_ids)
                  for path in clip.masks]
        native = longest_side_labels(self.transform, frames, [
            None if label is None else self._ids(label, clip.label_ids) for label in labels], self.pad_to)
        frames, labels = self.transform(frames, labels)
        count, slots = len(frames), self.pad_to
        semantic = torch.zeros((slots, self.image_size, self.image_size), dtype=torch.int64)
        for t, label in enumerate(labels):
            if label is not None:
                semantic[t] = torch.from_numpy(self._ids(label, clip.label_ids))
        if self.frontend == "cavp":  # CAVP's ten 1 s chunks (read_audio only for the waveform)
            from avseg.audio.cavp_frontend import avss_chunks, load_channels_16k

            log_mel = avss_chunks(load_channels_16k(clip.audio))
            waveform = read_audio(clip.audio, self.root, count, log_mel=False, waveform=True)[1] \
                if self.load_waveform else None
        else:
            log_mel, waveform = read_audio(clip.audio, self.root, count, waveform=self.load_waveform)
        frame_present = torch.zeros(slots, dtype=torch.bool)
        frame_present[:count] = True
        label_present = torch.zeros(slots, dtype=torch.bool)
        label_present[:count] = torch.tensor([label is not None for label in labels], dtype=torch.bool)
        target_masks, target_labels = split_targets(semantic)
        return Sample(
            frames=frames_tensor(frames, slots),
            log_mel=pad_examples(log_mel, slots),
            semantic=semantic,
            masks=target_masks,
            labels=target_labels,
            frame_present=frame_present,
            label_present=label_present,
            clip_id=clip.clip_id,
            dataset="avss",
            subset=clip.subset,
            category=None,
            waveform=waveform,
            **native,
        )

