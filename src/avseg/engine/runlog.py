"""What a training run records: `OUTPUT_DIR/log.jsonl` (one JSON object per line) and TensorBoard.

Records carry an "event" ("train", "eval", "note") with the step and epoch; "train" records hold
the losses averaged over the last `log_every` steps and over ranks, the learning rate of each
parameter group, the gradient norm and the codebook's usage and perplexity; "eval" records the
metrics of the task. Only rank 0 writes (the other ranks get a `RunLog(enabled=False)`).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path


def _scalar(value):
    if hasattr(value, "item") and getattr(value, "numel", lambda: 0)() == 1:
        value = value.item()
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value if not isinstance(value, float) or math.isfinite(value) else str(value)
    return None


class RunLog:
    """Append-only JSONL log plus TensorBoard scalars under `output_dir/tensorboard`."""

    def __init__(self, output_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = Path(output_dir) / "log.jsonl"
        self.writer = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(Path(output_dir) / "tensorboard"))
            except ImportError:  # tensorboard is a dependency; keep training if it is broken
                warnings.warn("tensorboard is not importable: only log.jsonl is written")

    def write(self, event: str, step: int, epoch: int, values: dict) -> None:
        """One record; numbers also go to TensorBoard as `event/key`."""
        if not self.enabled:
            return
        record = {"event": event, "step": step, "epoch": epoch, "time": round(time.time(), 3)}
        for key, value in values.items():
            scalar = _scalar(value)
            record[key] = scalar if scalar is not None else value
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=str) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key in ("event", "step", "epoch", "time"):
                    continue
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"{event}/{key}", value, step)
            self.writer.flush()

    def rewind(self, step: int) -> int:
        """Drop the records after `step` (a resumed run replays those steps); returns how many.

        log.jsonl is rewritten atomically without them; TensorBoard is reopened with
        `purge_step=step + 1`, which hides the events of the replayed steps.
        """
        if not self.enabled or not self.path.is_file():
            return 0
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:  # a line torn by a kill mid-write
                continue
        kept = [r for r in records if int(r.get("step", 0)) <= step]
        if len(kept) < len(records):
            temp = self.path.with_name(f".{self.path.name}.tmp")
            temp.write_text("".join(json.dumps(r, default=str) + "\n" for r in kept), encoding="utf-8")
            temp.replace(self.path)
        if self.writer is not None:
            from torch.utils.tensorboard import SummaryWriter

            log_dir = self.writer.log_dir
            self.writer.close()
            self.writer = SummaryWriter(log_dir, purge_step=step + 1)
        return len(records) - len(kept)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_log(path: str | Path) -> list[dict]:
    """All records of a log.jsonl."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
