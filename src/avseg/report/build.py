"""`avseg report RUN_DIR`: one self-contained HTML page about a training run.

It evaluates the run's checkpoint on the test split next to the trivial baselines (measured on
the same clips), and shows the training curves, a grid of overlays (input, ground truth,
prediction), per-class IoU, the pixel confusion matrix and the codebook usage.
"""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path

import numpy as np
import torch

from avseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from avseg.engine.step import forward_batch
from avseg.errors import UserError
from avseg.report import figures
from avseg.structures import IGNORE_INDEX

SHOWN = {"binary": ("j", "f", "f_batch_independent"), "semantic": ("miou", "f", "miou_no_bg"),
         "cavp": ("miou", "f1", "fdr")}


def find_checkpoint(run_dir: Path) -> Path:
    for name in ("best.pt", "last.pt"):
        if (run_dir / name).is_file():
            return run_dir / name
    raise UserError(f"{run_dir}: no best.pt or last.pt; is this the output_dir of an `avseg train` run?")


def _frame_image(frame: torch.Tensor) -> np.ndarray:
    image = frame.permute(1, 2, 0).cpu().numpy() * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


@torch.no_grad()
def collect(model, loader, task: str, num_classes: int, max_rows: int = 4) -> dict:
    """One pass over the loader: pixel confusion, codebook usage and a few overlay rows."""
    from avseg.engine.evaluate import predict

    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    quantizer = getattr(getattr(model, "baseline", model), "quantizer", None)
    codes = quantizer.codebook.shape[0] if quantizer is not None else 0
    usage = {"global": np.zeros(codes, dtype=np.int64), "local": np.zeros(codes, dtype=np.int64)}
    rows = []
    device = next(model.parameters()).device
    model.eval()
    for batch, _damaged in loader:
        if batch is None:
            continue
        batch = batch.to(device)
        outputs = forward_batch(model, batch)
        ids = predict(outputs, task, tuple(batch.semantic.shape[-2:]))["ids"]
        truth, labelled = batch.semantic.flatten(0, 1), batch.label_present.flatten()
        counted = truth[labelled] != IGNORE_INDEX  # CAVP's ignored pixels are in no cell
        pairs = (truth[labelled].clamp(0, num_classes - 1) * num_classes
                 + ids[labelled].clamp(0, num_classes - 1))[counted]
        confusion += torch.bincount(pairs.flatten(), minlength=num_classes**2).view(num_classes, -1).cpu().numpy()
        for key, name in (("indices", "global"), ("local_indices", "local")):
            if codes and key in outputs.get("vq", {}):
                usage[name] += torch.bincount(outputs["vq"][key].flatten(), minlength=codes).cpu().numpy()
        frames_per_clip = batch.frames.shape[1]
        for clip in range(batch.frames.shape[0]):
            if len(rows) >= max_rows:
                break
            labelled_slots = torch.nonzero(batch.label_present[clip]).flatten().tolist()
            if not labelled_slots:
                continue
            t = labelled_slots[len(labelled_slots) // 2]
            index = clip * frames_per_clip + t
            rows.append((f"{batch.clip_ids[clip]} frame {t}", _frame_image(batch.frames[clip, t]),
                         truth[index].cpu().numpy(), ids[index].cpu().numpy()))
    return {"confusion": confusion, "usage": usage, "rows": rows}


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return f"<p><em>{html.escape(alt)}: nothing to show for this run.</em></p>"
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _metrics_table(task: str, model_result: dict, baselines: dict[str, dict]) -> tuple[str, bool]:
    keys = [k for k in SHOWN[task] if k in model_result]
    main = model_result.get("main_metric", keys[0])
    lower_is_better = {"fdr"}
    rows = [("trained model", model_result)] + [(name.replace("_", " "), result) for name, result in baselines.items()]
    body = []
    for name, result in rows:
        cells = "".join(f"<td>{result.get(k, float('nan')):.4f}</td>" for k in keys)
        body.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    beats = all(model_result[main] > result[main] for result in baselines.values()) if main not in lower_is_better else \
        all(model_result[main] < result[main] for result in baselines.values())
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    return f"<table><tr><th></th>{head}</tr>{''.join(body)}</table>", beats


def render_html(*, title: str, run_dir: Path, checkpoint: Path, config, task: str, names: list[str],
                model_result: dict, baselines: dict[str, dict], records: list[dict], collected: dict) -> str:
    table, beats = _metrics_table(task, model_result, baselines)
    main = model_result.get("main_metric", SHOWN[task][0])
    verdict = ("beats every trivial baseline" if beats else "does NOT beat every trivial baseline: a finding to fix")
    per_class = model_result.get("per_class", {})
    iou = per_class.get("iou") if isinstance(per_class, dict) else None
    present = [i for i, n in enumerate(per_class.get("frames", [])) if n] if iou else []
    chart = figures.bar_chart([names[i] if i < len(names) else str(i) for i in present], [iou[i] for i in present],
                              "per-class IoU (classes present in the test split)", "IoU") if iou else None
    usage = collected["usage"]
    codebook = figures.codebook_figure(usage["global"], usage["local"]) if len(usage["global"]) else None
    m = config.model
    skipped = model_result.get("skipped", [])
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>run <code>{html.escape(str(run_dir))}</code>, checkpoint <code>{html.escape(checkpoint.name)}</code>, "
        f"model {html.escape(m.name)} ({html.escape(m.backbone)}), data set {html.escape(config.data.dataset)} at "
        f"<code>{html.escape(config.data.root)}</code>, {model_result.get('num_clips', '?')} test clips"
        f"{', skipped: ' + html.escape(', '.join(skipped)) if skipped else ''}; written {time.strftime('%Y-%m-%d %H:%M')}.</p>",
        "<h2>Test metrics against trivial baselines</h2>", table,
        f"<p class='verdict {'ok' if beats else 'bad'}'>On {html.escape(main)}, the trained model {verdict}.</p>",
        "<p>all background: nothing segmented. every object: every visible object segmented with its class, "
        "sounding or silent (a perfect segmenter that ignores the audio). shuffled audio: the trained model with "
        "each clip's audio taken from another clip.</p>",
        "<h2>Training curves</h2>", _img(figures.training_curves(records, main), "training curves"),
        "<h2>Overlays: input, ground truth, prediction</h2>", _img(figures.overlay_grid(collected["rows"]), "overlays"),
        "<h2>Per-class IoU</h2>", _img(chart, "per-class IoU"),
        "<h2>Confusion matrix</h2>", _img(figures.confusion_figure(collected["confusion"], names), "confusion matrix"),
        "<h2>Codebook usage</h2>", _img(codebook, "codebook usage"),
    ]
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}img{max-width:100%}"
             ".ok{color:#176e2c;font-weight:bold}.bad{color:#b00020;font-weight:bold}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(sections)}</body></html>")


def build_report(run_dir: str | Path, *, checkpoint: str | Path | None = None, split: str = "test",
                 out: str | Path | None = None, device: str = "cpu") -> tuple[Path, dict]:
    """Evaluate, compare with the baselines, draw, and write `report.html` (default RUN_DIR/report.html).

    Returns (path of the page, {"model": metrics, "baselines": {...}, "beats_baselines": bool}).
    """
    from avseg.data.build import class_names
    from avseg.engine.baselines import evaluate_baselines
    from avseg.engine.checkpoint import model_from_checkpoint
    from avseg.engine.evaluate import evaluate, evaluation_loader, task_of

    run_dir = Path(run_dir)
    checkpoint = Path(checkpoint) if checkpoint else find_checkpoint(run_dir)
    model, config, _ = model_from_checkpoint(checkpoint, map_location=device)
    names, task = class_names(config), task_of(config.data.dataset)
    loader = evaluation_loader(config, split)
    model_result = evaluate(model, loader, config, split=split)
    synth_root = Path(config.data.root) if (Path(config.data.root) / "_synth" / "info.json").is_file() else None
    baselines = evaluate_baselines(model, loader, config, synth_root=synth_root, split=split)
    collected = collect(model, loader, task, len(names))
    page = render_html(title=f"avseg report: {run_dir.name}", run_dir=run_dir, checkpoint=checkpoint, config=config,
                       task=task, names=names, model_result=model_result, baselines=baselines,
                       records=figures.read_log(run_dir / "log.jsonl"), collected=collected)
    path = Path(out) if out else run_dir / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    main = model_result["main_metric"]
    beats = all(model_result[main] > b[main] for b in baselines.values())
    summary = {"model": model_result, "baselines": baselines, "beats_baselines": beats}
    (path.parent / "report.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return path, summary
