"""`avseg study --jobs N`: N runs of a study at once, each in its own process.

Small CPU runs use two cores far better as two one-thread processes than as one two-thread process
(docs/study.md, "Budget"). Every run is still an ordinary run folder with its own lock, log and
resume; the parent starts a run whenever a slot is free, in the spec's order, and prints each
finished run with the time left for the study. A run that fails is named with its error file and
does not stop the others; the study then ends with an error listing them.

The children die with the parent (Linux: PR_SET_PDEATHSIG), so a killed study leaves no run
training behind; each run folder is also locked (`avseg.study.lock`), so two processes never write
one run.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path

from avseg.errors import UserError
from avseg.study.runner import MEASURE, TRAIN_DONE, Progress, run_finished, run_study, train_and_measure
from avseg.study.spec import run_folder

ERROR = "study_error.txt"


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM to this process when its parent dies (elsewhere: nothing)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child(spec, row: str, seed: int, out: Path, data_root: Path, audio, index: int, total: int,
           threads: int, jobs: int, done_seconds: list[float]) -> None:
    _die_with_parent()
    os.environ["TQDM_DISABLE"] = "1"  # N interleaved progress bars are noise; the [study] lines remain
    import torch

    torch.set_num_threads(threads)
    progress = Progress(total, log=lambda message: print(message, flush=True), jobs=jobs)
    progress.done_seconds = list(done_seconds)
    progress.run_index = index - 1
    run_dir = run_folder(out, row, seed)
    try:
        train_and_measure(spec, row, seed, out, data_root, audio, progress)
    except BaseException as error:  # the parent names the run and this file
        message = str(error) if isinstance(error, UserError) else traceback.format_exc()
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ERROR).write_text(message, encoding="utf-8")
        raise SystemExit(1) from None
    (run_dir / ERROR).unlink(missing_ok=True)


def run_parallel(spec, out: Path, data_root: Path, audio, jobs: int, *, log=print, runs=None) -> None:
    """Train and measure every unfinished run of `runs` (default: all of `spec`'s), `jobs` at a time."""
    import multiprocessing
    from multiprocessing.connection import wait

    import torch

    runs = spec.runs() if runs is None else runs
    todo = [(i + 1, row, seed) for i, (row, seed) in enumerate(runs)
            if not run_finished(out, row, seed)]
    threads = max(1, torch.get_num_threads() // jobs)
    log(f"[study] {len(runs) - len(todo)}/{len(runs)} runs already finished; {len(todo)} to go, "
        f"{jobs} at a time, {threads} thread(s) each")
    context = multiprocessing.get_context("spawn")
    running: dict[int, tuple] = {}  # sentinel -> (process, index, row, seed, start)
    done_seconds: list[float] = []
    failed: list[str] = []
    started = time.perf_counter()
    try:
        while todo or running:
            while todo and len(running) < jobs:
                index, row, seed = todo.pop(0)
                process = context.Process(target=_child, name=f"{row}/seed{seed}", daemon=False, args=(
                    spec, row, seed, out, data_root, audio, index, len(runs), threads, jobs, done_seconds))
                process.start()
                log(f"[study] run {index}/{len(runs)}: {row} seed {seed} started (pid {process.pid})")
                whole = trains_from_start(run_folder(out, row, seed))
                running[process.sentinel] = (process, index, row, seed, time.perf_counter(), whole)
            for sentinel in wait(list(running)):
                process, index, row, seed, start, whole = running.pop(sentinel)
                process.join()
                run_dir = run_folder(out, row, seed)
                if process.exitcode != 0 or not (run_dir / MEASURE).is_file():
                    where = run_dir / ERROR if (run_dir / ERROR).is_file() else "the output above"
                    failed.append(f"{row} seed {seed} (exit code {process.exitcode}; see {where})")
                    log(f"[study] run {index}/{len(runs)}: {row} seed {seed} FAILED; see {where}")
                    continue
                seconds = time.perf_counter() - start
                if whole:  # a resumed or measured-only run says little about a run's time
                    done_seconds.append(seconds)
                finished = len(runs) - len(todo) - len(running) - len(failed)
                left = _time_left(todo, running, done_seconds, jobs)
                train = json.loads((run_dir / TRAIN_DONE).read_text(encoding="utf-8")).get("seconds")
                log(f"[study] run {index}/{len(runs)}: {row} seed {seed} finished in {seconds / 60:.1f} min "
                    f"(training {train / 60 if train else 0:.1f} min); {finished}/{len(runs)} runs done, "
                    f"{(time.perf_counter() - started) / 60:.1f} min in; "
                    + (f"about {left / 60:.0f} min left" if left is not None else
                       "time left known once a run has trained from its start"))
    finally:
        for process, *_ in running.values():  # interrupted: stop the runs; each resumes from its last.pt
            process.terminate()
        for process, *_ in running.values():
            process.join()
    if failed:
        raise UserError(f"{len(failed)} run(s) failed, the others are kept: " + "; ".join(failed))


def trains_from_start(run_dir: Path) -> bool:
    """Whether a run about to start trains all its steps (nothing `avseg train` would resume, not trained yet)."""
    from avseg.engine.run_dir import resolve_resume

    return resolve_resume("auto", run_dir) is None and not (run_dir / TRAIN_DONE).is_file()


def _time_left(todo: list, running: dict, done_seconds: list[float], jobs: int) -> float | None:
    """Runs still to start plus what is left of the running ones, at the mean time of the runs
    trained whole so far (None before the first)."""
    if not done_seconds:
        return None
    typical = sum(done_seconds) / len(done_seconds)
    now = time.perf_counter()
    in_flight = sum(max(typical - (now - start), 0.0) for *_, start, _whole in running.values())
    return (len(todo) * typical + in_flight) / jobs


def run_study_parallel(spec, out: str | Path, *, jobs: int, log=print, rows: list[str] | None = None) -> dict:
    """`run_study` with `jobs` runs at a time (jobs = 1: the runs one after another, in this process)."""
    return run_study(spec, out, log=log, jobs=jobs, run_all=run_parallel if jobs > 1 else None, rows=rows)
