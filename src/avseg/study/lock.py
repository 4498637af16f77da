"""One process at a time in a study's run folder (`avseg study`, sequential or `--jobs N`)."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from avseg.errors import UserError

LOCK = ".study.lock"


@contextmanager
def run_lock(run_dir: Path):
    """Hold an exclusive lock on `run_dir` while a run trains and is measured there."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / LOCK, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise UserError(f"{run_dir}: another avseg study process (pid {holder}) is training this run; "
                            "wait for it or stop it, then run the study again") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock
