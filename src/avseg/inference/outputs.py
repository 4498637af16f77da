"""The output folder of `avseg predict`: never deletes what it did not write.

A folder that holds anything is refused unless `overwrite` is given; then only the files of an
earlier `avseg predict` are removed: those its predictions.json lists (`masks/frame_NNNNNN.png`
of every frame, overlay.mp4) and predictions.json itself. Anything else stays where it is.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from avseg.errors import UserError

REPORT = "predictions.json"
MASK_NAME = re.compile(r"^masks/frame_\d{6}\.png$")  # what predict_video writes, nothing else


def check_output_dir(out: Path, overwrite: bool) -> None:
    """UserError unless `out` is new, an empty folder, or (with `overwrite`) a folder."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and not overwrite and any(out.iterdir()):
        raise UserError(f"--out {out}: the folder is not empty; pass --overwrite to replace the results of an "
                        "earlier avseg predict there (files it did not write are kept)")


def earlier_outputs(out: Path) -> list[Path]:
    """The files an earlier `avseg predict` wrote to `out`, as its predictions.json lists them."""
    report = out / REPORT
    if not report.is_file():
        return []
    try:
        data = json.loads(report.read_text(encoding="utf-8"))
        frames, overlay = data.get("frames", []), data.get("overlay")
    except (OSError, ValueError, AttributeError):
        return []  # not a predictions.json avseg wrote: nothing of it is ours to delete
    own = [out / entry["mask"] for entry in frames
           if isinstance(entry, dict) and isinstance(entry.get("mask"), str) and MASK_NAME.match(entry["mask"])]
    if overlay == "overlay.mp4":
        own.append(out / overlay)
    return [*own, report]


def prepare_output_dir(out: Path, overwrite: bool) -> list[Path]:
    """Check `out` (`check_output_dir`), remove an earlier run's own files, create masks/; returns the removed."""
    check_output_dir(out, overwrite)
    removed = [path for path in earlier_outputs(out) if path.is_file()]
    for path in removed:
        path.unlink()
    (out / "masks").mkdir(parents=True, exist_ok=True)
    return removed
