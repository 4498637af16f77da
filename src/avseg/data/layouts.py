"""Where each file of a clip lives in the official AVSBench layouts.

This module is the single description of the S4, MS3 and AVSS (AVSBench-Semantic) layouts.
The synthetic generator writes through it, the readers read through it and `check-data` checks
through it, so the three can never disagree. Paths follow the public releases exactly:

S4 (ROOT = the `Single-source` folder)::

    ROOT/s4_meta_data.csv                      name,start_time,category,split (col 0 id, col 2 category)
    ROOT/s4_data/visual_frames/{split}/{category}/{vid}/{vid}_{i}.png      i = 1..5
    ROOT/s4_data/gt_masks/{split}/{category}/{vid}/{vid}_{i}.png           train: i = 1 only
    ROOT/s4_data/audio_wav/{split}/{category}/{vid}.wav
    ROOT/s4_data/audio_log_mel/{split}/{category}/{vid}.pkl               optional

MS3 (ROOT = the `Multi-sources` folder)::

    ROOT/ms3_meta_data.csv                     video_id,split (col 0 id)
    ROOT/ms3_data/visual_frames/{vid}/{vid}.mp4_{i}.png                    i = 1..5
    ROOT/ms3_data/gt_masks/{split}/{vid}/{vid}_{i}.png
    ROOT/ms3_data/audio_wav/{split}/{vid}.wav
    ROOT/ms3_data/audio_log_mel/{split}/{vid}.pkl                         optional

AVSS (ROOT = the `AVSBench_semantic` folder)::

    ROOT/metadata.csv                          vid,uid,s_min,s_sec,a_obj,split,label
    ROOT/label2idx.json                        {"background": 0, ...}
    ROOT/{label}/{uid}/frames/{i}.jpg          i = 0..4 (v1s, v1m) or 0..9 (v2)
    ROOT/{label}/{uid}/labels_rgb/{i}.png      v1s train: i = 0 only
    ROOT/{label}/{uid}/labels_semantic/{i}.png optional: class ids, one byte per pixel (255 =
                                               ignore); read instead of labels_rgb where present
                                               (the labels CAVP's AVSS loader reads)
    ROOT/{label}/{uid}/audio.wav

The `s4_data` / `ms3_data` level is optional: when ROOT has no such folder, the data folders are
looked for directly in ROOT.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

LAYOUTS = ("s4", "ms3", "avss")
SPLITS = ("train", "val", "test")
AVSS_SUBSETS = ("v1s", "v1m", "v2")
AVSS_FRAMES = {"v1s": 5, "v1m": 5, "v2": 10}
AVSS_SLOTS = 10  # the reference pads every AVSS clip to 10 frame slots
AVSBENCH_FRAMES = 5

S4_CSV = "s4_meta_data.csv"
MS3_CSV = "ms3_meta_data.csv"
AVSS_CSV = "metadata.csv"
AVSS_LABELS = "label2idx.json"
AVSS_ID_LABELS = "labels_semantic"  # class-id PNGs, where the release has them
S4_COLUMNS = ("name", "start_time", "category", "split")
MS3_COLUMNS = ("video_id", "split")
AVSS_COLUMNS = ("vid", "uid", "s_min", "s_sec", "a_obj", "split", "label")


class LayoutError(ValueError):
    """A data set folder or its metadata does not match the expected layout."""


@dataclass(frozen=True)
class ClipFiles:
    """The files of one clip.

    `frames[i]` and `masks[i]` belong to frame slot i; `masks[i]` is None where the layout has no
    ground truth for that frame (S4 and AVSS-v1s train clips label their first frame only).
    """

    layout: str
    clip_id: str
    split: str
    frames: tuple[Path, ...]
    masks: tuple[Path | None, ...]
    audio: Path
    log_mel_pkl: Path | None = None
    category: str | None = None
    subset: str | None = None
    csv_row: int = 0  # 1-based line number in the metadata csv (header = line 1)
    label_ids: bool = False  # masks hold class ids (AVSS labels_semantic/) rather than palette RGB


def data_dir(root: Path, layout: str) -> Path:
    """The folder that holds `visual_frames/` etc.: ROOT/s4_data, ROOT/ms3_data, or ROOT."""
    root = Path(root)
    if layout != "avss":  # the AVSBench-Object layouts (S4, MS3) nest their data one level down
        nested = root / f"{layout}_data"
        return nested if nested.is_dir() or not (root / "visual_frames").is_dir() else root
    return root


def metadata_path(root: Path, layout: str) -> Path:
    names = {"s4": S4_CSV, "ms3": MS3_CSV, "avss": AVSS_CSV}
    if layout not in names:
        raise LayoutError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    return Path(root) / names[layout]


def read_metadata(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str], list[str]]]:
    """Read a metadata csv: a list of (line number, row by column name, raw row).

    Raises LayoutError naming the file when it is missing, empty or lacks a required column.
    """
    path = Path(path)
    if not path.is_file():
        raise LayoutError(f"{path}: metadata file not found")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise LayoutError(f"{path}: cannot read csv ({err})") from err
    if not rows:
        raise LayoutError(f"{path}: empty file, expected a header row")
    header = [name.strip() for name in rows[0]]
    missing = [name for name in required if name not in header]
    if missing:
        raise LayoutError(
            f"{path}: missing column(s) {', '.join(missing)}; header is {','.join(header)}"
        )
    out = []
    for line, raw in enumerate(rows[1:], start=2):
        if not raw or all(not cell.strip() for cell in raw):
            continue
        out.append((line, dict(zip(header, (cell.strip() for cell in raw))), raw))
    return out


def s4_clip(root: Path, vid: str, category: str, split: str, line: int = 0) -> ClipFiles:
    base = data_dir(root, "s4")
    frames = tuple(base / "visual_frames" / split / category / vid / f"{vid}_{i}.png" for i in range(1, 6))
    labelled = 1 if split == "train" else AVSBENCH_FRAMES
    masks = tuple(
        base / "gt_masks" / split / category / vid / f"{vid}_{i}.png" if i <= labelled else None
        for i in range(1, 6)
    )
    return ClipFiles(
        layout="s4", clip_id=vid, split=split, frames=frames, masks=masks,
        audio=base / "audio_wav" / split / category / f"{vid}.wav",
        log_mel_pkl=base / "audio_log_mel" / split / category / f"{vid}.pkl",
        category=category, csv_row=line,
    )


def ms3_clip(root: Path, vid: str, split: str, line: int = 0) -> ClipFiles:
    base = data_dir(root, "ms3")
    frames = tuple(base / "visual_frames" / vid / f"{vid}.mp4_{i}.png" for i in range(1, 6))
    masks = tuple(base / "gt_masks" / split / vid / f"{vid}_{i}.png" for i in range(1, 6))
    return ClipFiles(
        layout="ms3", clip_id=vid, split=split, frames=frames, masks=masks,
        audio=base / "audio_wav" / split / f"{vid}.wav",
        log_mel_pkl=base / "audio_log_mel" / split / f"{vid}.pkl",
        csv_row=line,
    )


def avss_clip(root: Path, uid: str, subset: str, split: str, line: int = 0) -> ClipFiles:
    if subset not in AVSS_FRAMES:
        raise LayoutError(f"unknown AVSS subset {subset!r} for clip {uid}; expected v1s, v1m or v2")
    base = Path(root) / subset / uid
    count = AVSS_FRAMES[subset]
    labelled = 1 if (subset == "v1s" and split == "train") else count
    frames = tuple(base / "frames" / f"{i}.jpg" for i in range(count))
    label_ids = (base / AVSS_ID_LABELS).is_dir()
    folder = AVSS_ID_LABELS if label_ids else "labels_rgb"
    masks = tuple(base / folder / f"{i}.png" if i < labelled else None for i in range(count))
    return ClipFiles(
        layout="avss", clip_id=uid, split=split, frames=frames, masks=masks,
        audio=base / "audio.wav", subset=subset, csv_row=line, label_ids=label_ids,
    )


def list_clips(
    root: Path,
    layout: str,
    split: str | None = None,
    subsets: tuple[str, ...] | None = None,
    problems: list | None = None,
) -> list[ClipFiles]:
    """All clips of `layout` under `root` from its metadata csv, optionally one split / subsets.

    A csv row that cannot be a clip (too few cells, unknown AVSS subset) raises LayoutError; when
    a `problems` list is given, it gets a `Problem` for that row instead and the row is skipped,
    so one bad row never hides the others.
    """
    from avseg.data.problems import Problem

    root = Path(root)
    meta = metadata_path(root, layout)
    required = {"s4": ("split",), "ms3": ("split",), "avss": ("uid", "split", "label")}[layout]
    clips: list[ClipFiles] = []
    for line, row, raw in read_metadata(meta, required):
        try:
            if split is not None and row.get("split") != split:
                continue
            if layout == "s4":
                if len(raw) < 3:
                    raise LayoutError(f"{len(raw)} cells, expected name, start_time, category, split")
                clips.append(s4_clip(root, raw[0].strip(), raw[2].strip(), row["split"], line))
            elif layout == "ms3":
                clips.append(ms3_clip(root, raw[0].strip(), row["split"], line))
            elif subsets is None or row.get("label") in subsets:
                if not row.get("uid"):
                    raise LayoutError("empty uid")
                clips.append(avss_clip(root, row["uid"], row.get("label", ""), row["split"], line))
        except LayoutError as err:
            if problems is None:
                raise LayoutError(f"{meta}: line {line}: {err}") from None
            problems.append(Problem(meta.name, f"line {line}: {err}"))
    return clips


def read_label2idx(root: Path) -> dict[str, int]:
    """AVSS `label2idx.json`: class name -> class id (background = 0)."""
    path = Path(root) / AVSS_LABELS
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise LayoutError(f"{path}: class map not found") from err
    except (OSError, ValueError) as err:
        raise LayoutError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(mapping, dict) or not all(isinstance(v, int) for v in mapping.values()):
        raise LayoutError(f"{path}: expected an object mapping class names to integer ids")
    return mapping
