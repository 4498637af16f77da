"""Damaged training clips: each is named once and skipped, up to `data.max_damaged`; one more stops the run.

The training loader wraps the reader in `SkipDamaged` (avseg.data.build), so a clip whose files
cannot be read arrives as a `DamagedClip` (its id and the reader's one-line error naming the
file) instead of an exception in a DataLoader worker. `DamagedTally` keeps the distinct clips
seen (per process; restored on resume from the checkpoint's "extra"), reports each once and
raises `TooManyDamaged` naming them all when there are more than the limit.
"""

from __future__ import annotations

import math
from typing import Callable

from avseg.errors import UserError

AUTO_SHARE = 0.02  # data.max_damaged = -1: this share of the train split, at least 1 clip


class TooManyDamaged(UserError):
    """More damaged training clips than data.max_damaged allows."""


def damaged_limit(max_damaged: int, split_size: int) -> int:
    """The number of damaged clips a run may skip (`max_damaged`, or -1 = 2% of the split, >= 1)."""
    if max_damaged >= 0:
        return max_damaged
    return max(1, math.floor(AUTO_SHARE * split_size))


class DamagedTally:
    """Distinct damaged clips of a run; `add` reports new ones and enforces the limit."""

    def __init__(self, limit: int, split: str, report: Callable[[str, str], None]):
        self.limit, self.split, self.report = limit, split, report
        self.errors: dict[str, str] = {}  # clip id -> the reader's error

    def add(self, damaged: list) -> None:
        """Name every clip not seen before (`report(clip_id, error)`); TooManyDamaged past the limit."""
        for clip in damaged:
            if clip.clip_id in self.errors:
                continue
            self.errors[clip.clip_id] = clip.error
            self.report(clip.clip_id, clip.error)
        if len(self.errors) > self.limit:
            names = ", ".join(sorted(self.errors))
            raise TooManyDamaged(f"{len(self.errors)} damaged clips in the {self.split} split, more than "
                                 f"data.max_damaged={self.limit}: {names}; fix or remove them (avseg check-data "
                                 "names the files) or raise data.max_damaged")

    def state(self) -> dict[str, str]:
        return dict(self.errors)

    def restore(self, errors: dict[str, str] | None) -> None:
        self.errors = dict(errors or {})
