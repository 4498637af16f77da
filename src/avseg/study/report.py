"""DIR/report.html of a study: the table, bars with error bars, training curves, SNR curves, t-SNE."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from avseg.report.figures import png_bytes
from avseg.study.spec import StudySpec, run_folder


def _plt():
    """matplotlib.pyplot on the Agg backend (set by avseg.report.figures)."""
    import matplotlib.pyplot as plt

    return plt


def bars(results: dict) -> bytes | None:
    """mIoU and shuffled-audio mIoU per row, mean with a ±1 std error bar, seeds as dots."""
    rows = [(e["label"], e) for e in results["rows"].values() if e.get("miou")]
    if not rows:
        return None
    plt = _plt()
    figure, axis = plt.subplots(figsize=(max(5.0, 1.1 * len(rows)), 3.4))
    x = np.arange(len(rows))
    for offset, key, colour, name in ((-0.2, "miou", "tab:blue", "mIoU"), (0.2, "shuffled_miou", "tab:grey", "shuffled audio")):
        means = [e[key]["mean"] if e.get(key) else np.nan for _, e in rows]
        stds = [e[key]["std"] if e.get(key) else 0 for _, e in rows]
        axis.bar(x + offset, means, 0.38, yerr=stds, capsize=3, color=colour, label=name, alpha=0.85)
        for i, (_, e) in enumerate(rows):
            if e.get(key):
                axis.scatter([x[i] + offset] * len(e[key]["values"]), e[key]["values"], s=9, color="black", zorder=3)
    axis.set_xticks(x, [label for label, _ in rows], rotation=20, ha="right", fontsize=8)
    axis.set(ylabel="test mIoU", title="Rows: mean ± std over seeds (dots: seeds)")
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    return png_bytes(figure)


def snr_curves(results: dict) -> bytes | None:
    rows = [(e["label"], e["snr"]) for e in results["rows"].values() if e.get("snr")]
    if not rows:
        return None
    plt = _plt()
    figure, axis = plt.subplots(figsize=(5.2, 3.4))
    for label, snr in rows:
        keys = [k for k in snr if snr[k]]
        x = np.array([float(k) for k in keys])
        mean = np.array([snr[k]["mean"] for k in keys])
        std = np.array([snr[k]["std"] for k in keys])
        order = np.argsort(x)
        axis.plot(x[order], mean[order], marker="o", label=label)
        axis.fill_between(x[order], (mean - std)[order], (mean + std)[order], alpha=0.2)
    axis.set(xlabel="test SNR (dB)", ylabel="test mIoU", title="Noise robustness (mean ± std)")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    return png_bytes(figure)


def curves(out: Path, spec: StudySpec) -> bytes | None:
    from avseg.report.figures import read_log

    plt = _plt()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    cmap = plt.get_cmap("tab10")
    drawn = False
    for index, row in enumerate(spec.rows):
        for seed in spec.seeds:
            records = read_log(run_folder(out, row.name, seed) / "log.jsonl")
            train = [r for r in records if r.get("event") == "train" and isinstance(r.get("loss_total"), (int, float))]
            evals = [r for r in records if r.get("event") == "eval" and isinstance(r.get("miou"), (int, float))]
            label = row.label if seed == spec.seeds[0] else None
            if train:
                left.plot([r["step"] for r in train], [r["loss_total"] for r in train], color=cmap(index % 10),
                          alpha=0.7, lw=1, label=label)
                drawn = True
            if evals:
                right.plot([r["step"] for r in evals], [r["miou"] for r in evals], color=cmap(index % 10),
                           alpha=0.7, lw=1, marker=".", label=label)
    if not drawn:
        plt.close(figure)
        return None
    left.set(xlabel="step", ylabel="training loss", title="training loss, every run")
    right.set(xlabel="step", ylabel="val mIoU", title="validation mIoU, every run")
    for axis in (left, right):
        axis.grid(alpha=0.3)
    left.legend(fontsize=7)
    return png_bytes(figure)


def tsne_images(out: Path, spec: StudySpec) -> list[tuple[str, bytes]]:
    from avseg.study.tsne import tsne_png

    images = []
    for row in spec.tsne.rows:
        path = run_folder(out, row, spec.tsne.seed) / "tokens.npz"
        if path.is_file():
            with np.load(path) as data:
                tokens, meta = data["tokens"], json.loads(str(data["meta"]))
            png = tsne_png(tokens, meta, f"{spec.row(row).label}: global tokens", seed=spec.tsne.seed)
            if png:
                images.append((row, png))
    return images


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return f"<p><em>{html.escape(alt)}: nothing to plot yet.</em></p>"
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(markdown_text: str) -> str:
    """The results.md table rows as an HTML table (the markdown stays the source of truth)."""
    rows = [line for line in markdown_text.splitlines() if line.startswith("|") and not line.startswith("|---")]
    if not rows:
        return ""
    cells = [[html.escape(c.strip()) for c in row.strip("|").split("|")] for row in rows]
    head = "".join(f"<th>{c}</th>" for c in cells[0])
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(results: dict, spec: StudySpec, out: Path, text: str) -> Path:
    """Write DIR/report.html from the aggregated `results` and their markdown `text`."""
    tables = text.split("\n## ")
    targets = "".join(
        f"<li><b>{html.escape(k)}</b>: {'met' if v['met'] else '<b>NOT met</b>'}: {html.escape(v['rule'])}</li>"
        for k, v in results.get("targets", {}).items())
    tsne = "".join(f"<figure>{_img(png, row)}<figcaption>{html.escape(row)}: ratio "
                   f"{results['tsne'].get(row, {}).get('ratio')}</figcaption></figure>" for row, png in tsne_images(out, spec))
    b = results.get("baselines")
    baseline_line = (f"<p>Trivial baselines on the same test clips: all background mIoU {b['all_background']:.3f}; "
                     f"every visible object with its class, sounding or not (ignores the audio) {b['every_object']:.3f}.</p>"
                     if b else "")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>avseg study {html.escape(spec.name)}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}} img{{max-width:100%}} figure{{display:inline-block}}</style></head><body>
<h1>avseg study: {html.escape(spec.name)}</h1>
<p>{html.escape(results['benchmark_line'])}; seeds {results['seeds']}; {results['runs_finished']} of {results['runs_total']} runs finished.</p>
<p>{html.escape(spec.description)}</p>
<h2>Results (mean ± std over seeds)</h2>{_table(tables[0])}{baseline_line}
<h2>Rows</h2>{_img(bars(results), "bars")}
<h2>Targets</h2><ul>{targets or '<li>not measurable yet</li>'}</ul>
<h2>Noise robustness</h2>{_img(snr_curves(results), "SNR curves")}
<h2>Decomposed semantics (t-SNE of the global tokens)</h2>{tsne or '<p><em>no tokens recorded yet</em></p>'}
<h2>Training curves</h2>{_img(curves(out, spec), "training curves")}
<p>Machine: {html.escape(json.dumps(results['machine']))}</p>
</body></html>
"""
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
