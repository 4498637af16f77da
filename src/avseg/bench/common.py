"""What the bench suites share: a measured row in a fresh Python process, peak memory, argument
checks and the JSON output.

A suite's module is its own worker: `python -m avseg.bench.SUITE REQUEST_JSON` measures one row
and prints it as one JSON line (`worker_main`); `run_worker` starts it and reads that line back.
A fresh process per row makes each row's peak memory its own.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Callable

from avseg.errors import UserError

RANDOM_INIT = ["model.backbone_weights=", "audio.vggish_weights="]  # weight files -> random init
WEIGHT_WARNINGS = ".*(no weights|random init).*"


def peak_memory_mb(device) -> float:
    """Peak memory of this process so far: CUDA allocations on a GPU, else the peak resident set."""
    if getattr(device, "type", str(device)).startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check_device(device: str) -> None:
    """UserError for --device cuda where no CUDA device exists."""
    if str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: no CUDA device is available here")


def run_worker(module: str, request: dict, what: str) -> dict:
    """Run `python -m module REQUEST_JSON` in a fresh process; its last stdout line as a dict."""
    result = subprocess.run([sys.executable, "-m", module, json.dumps(request)], capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"{what} failed: {tail}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def worker_main(measure: Callable[[dict], object]) -> None:
    """The `__main__` of a suite: measure the request of argv[1], print the row as one JSON line."""
    try:
        row = measure(json.loads(sys.argv[1]))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(asdict(row) if is_dataclass(row) else row))


def int_list(text: str, option: str, minimum: int = 0) -> list[int]:
    """'0,1,2' as integers >= minimum, else a UserError naming the option."""
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise UserError(f"{option} {text}: expected comma-separated integers, e.g. 0,1,2") from None
    if not values or any(v < minimum for v in values):
        raise UserError(f"{option} {text}: expected comma-separated integers >= {minimum}")
    return values


def check_at_least(**values: tuple[int | None, int]) -> None:
    """UserError naming the first option below its minimum: check_at_least(steps=(n, 1))."""
    for name, (value, minimum) in values.items():
        if value is not None and value < minimum:
            raise UserError(f"--{name.replace('_', '-')} must be >= {minimum}, got {value}")


def write_rows(path: Path | None, rows: list) -> None:
    """With --json PATH: {"rows": [...]} (dataclass rows as dicts)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rows": [asdict(r) if is_dataclass(r) else r for r in rows]}, indent=2))
    print(f"wrote {path}")


def fmt(value, spec: str, width: int) -> str:
    """A table cell: `value` formatted by `spec`, or '-' when there is no value (None)."""
    return f"{'-' if value is None else format(value, spec):>{width}}"
