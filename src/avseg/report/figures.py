"""Figures of the HTML report, drawn with matplotlib (Agg) and returned as PNG bytes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from avseg.data.palette import voc_palette  # noqa: E402


def png_bytes(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def read_log(path: Path) -> list[dict]:
    """Records of a run's log.jsonl (unreadable lines skipped)."""
    records = []
    if not Path(path).is_file():
        return records
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def training_curves(records: list[dict], main_metric: str) -> bytes | None:
    """Total loss per logged step, and the validation metric per evaluation."""
    train = [r for r in records if r.get("event") == "train" and isinstance(r.get("loss_total"), (int, float))]
    evals = [r for r in records if r.get("event") == "eval" and isinstance(r.get(main_metric), (int, float))]
    if not train and not evals:
        return None
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.plot([r["step"] for r in train], [r["loss_total"] for r in train], color="tab:blue")
    left.set(xlabel="step", ylabel="training loss", title="loss")
    left.grid(alpha=0.3)
    right.plot([r["step"] for r in evals], [r[main_metric] for r in evals], marker="o", color="tab:green")
    right.set(xlabel="step", ylabel=main_metric, title=f"validation {main_metric}")
    right.grid(alpha=0.3)
    return png_bytes(figure)


def colour_ids(ids: np.ndarray) -> np.ndarray:
    """Class ids `[H, W]` -> RGB in the AVSBench palette (ids beyond it wrap)."""
    palette = voc_palette(256)
    return palette[np.asarray(ids) % 256]


def overlay_grid(rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> bytes | None:
    """rows of (title, frame uint8 [H,W,3], ground-truth ids [H,W], predicted ids [H,W])."""
    if not rows:
        return None
    figure, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.5 * len(rows)), squeeze=False)
    for (title, frame, truth, predicted), line in zip(rows, axes):
        for axis, image, label in zip(line, (frame, truth, predicted), ("input", "ground truth", "prediction")):
            if image.ndim == 2:  # class ids: colour the objects, leave the background as it is
                blended = (0.35 * frame + 0.65 * colour_ids(image)).astype(np.uint8)
                image = np.where((image > 0)[..., None], blended, frame)
            axis.imshow(image)
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(f"{label}" if label != "input" else title, fontsize=8)
    return png_bytes(figure)


def bar_chart(names: list[str], values: list[float], title: str, xlabel: str) -> bytes | None:
    if not names:
        return None
    figure, axis = plt.subplots(figsize=(7, 0.3 * len(names) + 1))
    axis.barh(range(len(names)), values, color="tab:purple")
    axis.set_yticks(range(len(names)), names, fontsize=8)
    axis.invert_yaxis()
    axis.set(xlabel=xlabel, title=title, xlim=(0, max(1.0, max(values) if values else 1.0)))
    axis.grid(axis="x", alpha=0.3)
    return png_bytes(figure)


def confusion_figure(confusion: np.ndarray, names: list[str]) -> bytes:
    """Row-normalised pixel confusion matrix (rows: ground truth, columns: prediction)."""
    rows = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, rows, out=np.zeros_like(confusion, dtype=float), where=rows > 0)
    size = max(4.0, 0.35 * len(names) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    image = axis.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    axis.set_yticks(range(len(names)), names, fontsize=7)
    axis.set(xlabel="predicted", ylabel="ground truth", title="pixel confusion (row-normalised)")
    figure.colorbar(image, fraction=0.046)
    return png_bytes(figure)


def codebook_figure(global_counts: np.ndarray, local_counts: np.ndarray) -> bytes:
    figure, axis = plt.subplots(figsize=(8, 2.6))
    codes = np.arange(len(global_counts))
    axis.bar(codes - 0.2, global_counts, width=0.4, label="global tokens")
    axis.bar(codes + 0.2, local_counts, width=0.4, label="local tokens")
    axis.set(xlabel="codeword", ylabel="uses on the test split", title="codebook usage")
    axis.legend()
    return png_bytes(figure)
