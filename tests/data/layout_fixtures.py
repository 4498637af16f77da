"""Tiny S4 / MS3 / AVSS trees in the official layouts, with known ground truth.

Paths come from `avseg.data.layouts`, so the trees are laid out exactly where the readers and
the checker look. Frames are small noise images, masks are rectangles whose place depends on the
clip and the frame, audio is a 440 Hz tone as long as the clip (5 s or 10 s).
"""

from __future__ import annotations

import csv
import json
import pickle
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image

from avseg.data import layouts
from avseg.data.palette import AVSS_NUM_CLASSES, ids_to_rgb

SIZE = 32
SAMPLE_RATE = 16_000
S4_CATEGORIES = ("dog_barking", "cat_meowing")


@dataclass
class FixtureTree:
    """A written tree: its root and the ground truth it holds.

    `truth[(clip_id, t)]` is frame t's label map: bool `[H, W]` (S4/MS3) or int64 class ids
    (AVSS), for the frames that have ground truth only. `clips[split]` lists clip ids.
    """

    root: Path
    layout: str
    truth: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    clips: dict[str, list[str]] = field(default_factory=dict)
    subset_of: dict[str, str] = field(default_factory=dict)


def tone(seconds: float, sample_rate: int = SAMPLE_RATE, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    wave = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    return wave if channels == 1 else np.stack([wave] * channels, axis=1)


def write_wav(path: Path, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, sample_rate, subtype="PCM_16")


def write_tone_wav(path: Path, seconds: float, channels: int = 1, sample_rate: int = SAMPLE_RATE) -> Path:
    """A 440 Hz tone of `seconds` as 16-bit PCM at `path`; returns `path`."""
    write_wav(path, tone(seconds, sample_rate, channels), sample_rate)
    return path


def read_wav(path: Path) -> np.ndarray:
    """The wav as soundfile decodes it: float32 `[samples]` (mono) or `[samples, channels]`."""
    return sf.read(str(path), dtype="float32")[0]


# the hint the readers append to a missing or damaged file's message
CHECK_DATA = "; `avseg check-data` lists every missing or damaged file of the data set"


def _seed(clip_id: str, t: int) -> int:
    return zlib.crc32(f"{clip_id}/{t}".encode())


def write_frame(path: Path, seed: int, size: tuple[int, int] = (SIZE, SIZE)) -> None:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="RGB").save(path)


def box(t: int, clip_index: int, size: tuple[int, int] = (SIZE, SIZE), offset: int = 0) -> np.ndarray:
    """bool `[H, W]`: a rectangle that moves with frame t and clip index."""
    width, height = size
    mask = np.zeros((height, width), dtype=bool)
    top, left = 2 + 3 * t % (height // 2), 1 + 4 * clip_index + offset
    mask[top : top + height // 3, left : left + width // 3] = True
    return mask


def _write_csv(path: Path, header: tuple[str, ...], rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _write_binary_masks(tree: FixtureTree, clip: layouts.ClipFiles, index: int, palette_mode: bool) -> None:
    for t, path in enumerate(clip.masks):
        if path is None:
            continue
        mask = box(t, index)
        path.parent.mkdir(parents=True, exist_ok=True)
        if palette_mode:  # MS3-style palette PNG: index 1 = object
            image = Image.fromarray(mask.astype(np.uint8), mode="P")
            image.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
        else:  # S4-style grey PNG, 0 / 255
            image = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
        image.save(path)
        tree.truth[(clip.clip_id, t)] = mask


def write_log_mel_pkl(path: Path, value: torch.Tensor) -> None:
    """The release's format: a tensor `[5, 1, 96, 64]` written with plain pickle."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(value, handle)


def pkl_value(clip_index: int) -> torch.Tensor:
    return torch.arange(5 * 96 * 64, dtype=torch.float32).view(5, 1, 96, 64) / 1000.0 + clip_index


def write_s4(root: Path, clips_per_split: int = 2, with_pkl: bool = False) -> FixtureTree:
    """ROOT/s4_meta_data.csv + ROOT/s4_data/...; one clip's wav is 22.05 kHz stereo."""
    tree = FixtureTree(Path(root), "s4")
    (tree.root / "s4_data").mkdir(parents=True, exist_ok=True)
    rows = []
    for split in layouts.SPLITS:
        for index in range(clips_per_split):
            vid, category = f"s4{split}{index}", S4_CATEGORIES[index % 2]
            clip = layouts.s4_clip(tree.root, vid, category, split)
            rows.append([vid, "0", category, split])
            tree.clips.setdefault(split, []).append(vid)
            for t, path in enumerate(clip.frames):
                write_frame(path, seed=_seed(vid, t))
            _write_binary_masks(tree, clip, index, palette_mode=False)
            if index == 1:
                write_wav(clip.audio, tone(5.0, 22_050, channels=2), 22_050)
            else:
                write_wav(clip.audio, tone(5.0))
            if with_pkl:
                write_log_mel_pkl(clip.log_mel_pkl, pkl_value(index))
    _write_csv(tree.root / layouts.S4_CSV, layouts.S4_COLUMNS, rows)
    return tree


def write_ms3(root: Path, clips_per_split: int = 2) -> FixtureTree:
    """ROOT/ms3_meta_data.csv + ROOT/ms3_data/...; masks are palette PNGs."""
    tree = FixtureTree(Path(root), "ms3")
    (tree.root / "ms3_data").mkdir(parents=True, exist_ok=True)
    rows = []
    for split in layouts.SPLITS:
        for index in range(clips_per_split):
            vid = f"ms3{split}{index}"
            clip = layouts.ms3_clip(tree.root, vid, split)
            rows.append([vid, split])
            tree.clips.setdefault(split, []).append(vid)
            for t, path in enumerate(clip.frames):
                write_frame(path, seed=_seed(vid, t))
            _write_binary_masks(tree, clip, index, palette_mode=True)
            write_wav(clip.audio, tone(5.0))
    _write_csv(tree.root / layouts.MS3_CSV, layouts.MS3_COLUMNS, rows)
    return tree


def avss_label(t: int, index: int, subset: str, size: tuple[int, int]) -> np.ndarray:
    """int64 class ids `[H, W]`: two classes (one per clip, one per subset) in two rectangles."""
    ids = np.zeros((size[1], size[0]), dtype=np.int64)
    ids[box(t, index, size)] = 3 + index
    ids[box(t, 0, size, offset=size[0] // 2)] = {"v1s": 12, "v1m": 40, "v2": 70}[subset]
    return ids


def write_avss(
    root: Path,
    clips_per_split: int = 2,
    subsets: tuple[str, ...] = layouts.AVSS_SUBSETS,
    frame_sizes: dict[str, tuple[int, int]] | None = None,
) -> FixtureTree:
    """ROOT/metadata.csv, ROOT/label2idx.json (71 classes), ROOT/{label}/{uid}/...

    `frame_sizes` gives (width, height) per subset (default 32 x 32 everywhere).
    """
    tree = FixtureTree(Path(root), "avss")
    tree.root.mkdir(parents=True, exist_ok=True)
    names = {"background": 0} | {f"class_{i:02d}": i for i in range(1, AVSS_NUM_CLASSES)}
    (tree.root / layouts.AVSS_LABELS).write_text(json.dumps(names), encoding="utf-8")
    rows = []
    for subset in subsets:
        size = (frame_sizes or {}).get(subset, (SIZE, SIZE))
        for split in layouts.SPLITS:
            for index in range(clips_per_split):
                uid = f"{subset}_{split}_{index}"
                clip = layouts.avss_clip(tree.root, uid, subset, split)
                rows.append([f"yt{index}", uid, "0", "0", "dog", split, subset])
                tree.clips.setdefault(split, []).append(uid)
                tree.subset_of[uid] = subset
                for t, path in enumerate(clip.frames):
                    write_frame(path, seed=_seed(uid, t), size=size)
                for t, path in enumerate(clip.masks):
                    if path is not None:
                        ids = avss_label(t, index, subset, size)
                        path.parent.mkdir(parents=True, exist_ok=True)
                        Image.fromarray(ids_to_rgb(ids), mode="RGB").save(path)
                        tree.truth[(uid, t)] = ids
                write_wav(clip.audio, tone(float(len(clip.frames))))
    _write_csv(tree.root / layouts.AVSS_CSV, layouts.AVSS_COLUMNS, rows)
    return tree
