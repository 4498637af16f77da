"""A training run's folder: where a run resumes from, and what a (re)start does to OUTPUT_DIR."""

from __future__ import annotations

import sys
from pathlib import Path

from avseg.config import Config, save_config
from avseg.engine.checkpoint import remove_stale_temp_files
from avseg.errors import UserError

LAST, BEST = "last.pt", "best.pt"


def resolve_resume(resume: str | None, output_dir: Path) -> Path | None:
    """--resume PATH, or "auto" = OUTPUT_DIR/last.pt when it exists (else a fresh start)."""
    if resume is None:
        return None
    if resume == "auto":
        path = output_dir / LAST
        return path if path.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise UserError(f"--resume {resume}: checkpoint not found")
    return path


def prepare_output(out: Path, config: Config, *, fresh: bool) -> None:
    """Create OUTPUT_DIR (a UserError if it cannot be written), write config.yaml, drop stale temp files."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
        if fresh and (out / "log.jsonl").is_file():
            (out / "log.jsonl").unlink()
    except OSError as err:
        raise UserError(f"output_dir {out}: cannot write there ({err.strerror or err})") from None
    for temp in remove_stale_temp_files(out):
        print(f"avseg train: removed {temp}, left by a checkpoint write that was interrupted", file=sys.stderr)
