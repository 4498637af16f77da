"""Progress bars: one switch for all of the project's tqdm bars (a top-level module, so that data,
engine and inference can all ask it)."""

from __future__ import annotations

import os


def progress_bars_off() -> bool:
    """True when the environment sets TQDM_DISABLE (tqdm's own switch, which any explicit `disable=`
    argument overrides, so the project's bars ask here too): `avseg study --jobs N` sets it in its
    runs, whose interleaved bars would be noise."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() in ("1", "true", "yes", "on")
