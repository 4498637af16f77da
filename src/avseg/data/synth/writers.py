"""Write a synthetic clip into an official layout (through `avseg.data.layouts`) plus `_synth/`.

Every encoder used is deterministic: PNG (PIL, compress_level 1), JPEG (PIL, quality 95), wav
(soundfile, 16-bit PCM, no timestamped chunks), and the `.npz` extras, written with fixed zip
entry dates (numpy's own `savez` stamps the current time).
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

from avseg.data import layouts
from avseg.data.palette import ids_to_rgb, voc_palette
from avseg.data.synth.plan import ClipPlan
from avseg.data.synth.scene import SynthClip
from avseg.data.synth.sounds import SAMPLE_RATE
from avseg.errors import UserError

SYNTH_DIR = "_synth"
PNG_LEVEL = 1
JPEG_QUALITY = 95
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_MS3_PALETTE = voc_palette(256).reshape(-1).tolist()


def _ensure_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{path.parent}: cannot create folder ({err})") from err


def _save_image(image: Image.Image, path: Path, **options) -> None:
    _ensure_parent(path)
    try:
        image.save(path, **options)
    except OSError as err:
        raise UserError(f"{path}: cannot write image ({err})") from err


def save_png(array: np.ndarray, path: Path, palette: list[int] | None = None) -> None:
    """uint8 `[H, W, 3]` -> RGB, `[H, W]` -> 'L', or 'P' with `palette` (flat RGB list)."""
    if palette is None:
        image = Image.fromarray(np.ascontiguousarray(array))
    else:
        image = Image.frombytes("P", (array.shape[1], array.shape[0]), np.ascontiguousarray(array).tobytes())
        image.putpalette(palette)
    _save_image(image, path, format="PNG", compress_level=PNG_LEVEL)


def save_wav(waveform: np.ndarray, path: Path) -> None:
    """float32 `[samples]` in [-1, 1] -> 16-bit PCM wav at 16 kHz."""
    _ensure_parent(path)
    try:
        soundfile.write(str(path), waveform, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    except (OSError, RuntimeError) as err:
        raise UserError(f"{path}: cannot write wav ({err})") from err


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A compressed `.npz` (readable by `numpy.load`) with the same bytes on every run."""
    _ensure_parent(path)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue())
    try:
        path.write_bytes(buffer.getvalue())
    except OSError as err:
        raise UserError(f"{path}: cannot write ({err})") from err


def write_text(path: Path, text: str) -> None:
    _ensure_parent(path)
    try:
        path.write_text(text, encoding="utf-8", newline="\n")
    except OSError as err:
        raise UserError(f"{path}: cannot write ({err})") from err


def clip_files(root: Path, layout: str, plan: ClipPlan, category: str | None) -> layouts.ClipFiles:
    """Where the clip's files go, from layouts.py (the readers and the checker use the same)."""
    if layout == "s4":
        return layouts.s4_clip(root, plan.vid, category or "", plan.split)
    if layout == "ms3":
        return layouts.ms3_clip(root, plan.vid, plan.split)
    return layouts.avss_clip(root, plan.clip_id, plan.subset, plan.split)


def _write_masks(layout: str, files: layouts.ClipFiles, clip: SynthClip) -> None:
    for t, path in enumerate(files.masks):
        if path is None:
            continue
        if layout == "s4":
            save_png(np.where(clip.semantic[t] > 0, 255, 0).astype(np.uint8), path)
        elif layout == "ms3":
            save_png((clip.semantic[t] > 0).astype(np.uint8), path, palette=_MS3_PALETTE)
        else:
            save_png(ids_to_rgb(clip.semantic[t]).astype(np.uint8), path)


def write_clip(root: Path, layout: str, plan: ClipPlan, clip: SynthClip) -> list[str]:
    """Write one clip's frames, masks, audio and `_synth/clips/{clip_id}.npz`.

    Returns:
        the clip's metadata csv row, in the order of the layout's column tuple.
    """
    names = clip.sounding_names()
    if layout == "s4" and len(names) != 1:
        raise ValueError(f"S4 clip {plan.vid} must have exactly one sounding class, has {names}")
    files = clip_files(root, layout, plan, names[0] if layout == "s4" else None)
    for t, path in enumerate(files.frames):
        if layout == "avss":
            _save_image(Image.fromarray(clip.frames[t]), path, format="JPEG", quality=JPEG_QUALITY)
        else:
            save_png(clip.frames[t], path)
    _write_masks(layout, files, clip)
    save_wav(clip.waveform, files.audio)
    save_npz(Path(root) / SYNTH_DIR / "clips" / f"{plan.clip_id}.npz", {
        "instances": clip.instances,
        "class_ids": clip.class_ids.astype(np.int16),
        "sounding": clip.sounding,
        "depth": np.array([obj.depth for obj in clip.objects], dtype=np.int16),
        "snr_db": np.float32(clip.snr_db),
        "multi_source": np.bool_(clip.multi_source),
        "offscreen_class": np.int16(clip.offscreen_class),
        "offscreen_sounding": np.array(clip.offscreen_sounding or [False] * clip.num_frames, dtype=bool),
    })
    if layout == "s4":
        return [plan.vid, "0", names[0], plan.split]
    if layout == "ms3":
        return [plan.vid, plan.split]
    return [plan.vid, plan.clip_id, "0", "0", "_".join(names), plan.split, plan.subset or ""]


def write_metadata(root: Path, layout: str, rows: list[list[str]]) -> None:
    """The layout's metadata csv (header + one row per clip, in clip order)."""
    columns = {"s4": layouts.S4_COLUMNS, "ms3": layouts.MS3_COLUMNS, "avss": layouts.AVSS_COLUMNS}[layout]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    write_text(layouts.metadata_path(root, layout), buffer.getvalue())


def write_label2idx(root: Path, class_names: list[str]) -> None:
    """AVSS `label2idx.json`: {"background": 0, name: id, ...}, ids 1.. in class-bank order."""
    mapping = {"background": 0, **{name: index + 1 for index, name in enumerate(class_names)}}
    write_text(Path(root) / layouts.AVSS_LABELS, json.dumps(mapping, indent=2) + "\n")
