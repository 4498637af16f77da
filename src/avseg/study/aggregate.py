"""From the runs' measure.json files to results.json, results.md and report.html.

Every number is mean ± sample standard deviation over the seeds that finished (n is stated);
nothing is computed from thresholds or copied: a row without finished runs has no numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from avseg.study.spec import StudySpec, run_config, run_folder, spec_to_dict

COLUMNS = (  # key in measure.json, header in results.md
    ("miou", "mIoU"), ("f", "F"), ("binary_j", "J (bin)"), ("binary_f", "F (bin)"),
    ("shuffled_miou", "mIoU shuffled audio"),
    ("objects/recall/sources_1", "recall 1 src"), ("objects/recall/sources_2", "recall 2 src"),
    ("objects/recall/sources_3+", "recall 3+ src"), ("objects/recall/offscreen", "recall w/ off-screen"),
    ("objects/recall/no_offscreen", "recall w/o off-screen"), ("objects/fpr/all", "FPR silent"),
    ("objects/fpr/offscreen", "FPR silent w/ off-screen"), ("perplexity_global", "perplexity"),
    ("code_sets_global", "code sets (clips)"), ("code_sets_local", "code sets (frames)"),
)


def _get(record: dict, key: str):
    if key.startswith("objects/"):
        return (record.get("objects") or {}).get(key[len("objects/"):])
    return record.get(key)


def stats(values: list[float | None]) -> dict | None:
    """{"mean", "std" (sample, ddof 1; 0 for one value), "n", "values"} of the finite values, or None."""
    kept = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not kept:
        return None
    return {"mean": float(np.mean(kept)), "std": float(np.std(kept, ddof=1)) if len(kept) > 1 else 0.0,
            "n": len(kept), "values": kept}


def load_runs(out: Path, spec: StudySpec) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for row in spec.rows:
        for seed in spec.seeds:
            path = run_folder(out, row.name, seed) / "measure.json"
            if path.is_file():
                runs.setdefault(row.name, []).append(json.loads(path.read_text(encoding="utf-8")))
    return runs


def row_table(spec: StudySpec, runs: dict[str, list[dict]]) -> dict[str, dict]:
    table = {}
    for row in spec.rows:
        records = runs.get(row.name, [])
        entry = {"label": row.label, "paper": row.paper, "seeds": [r["seed"] for r in records]}
        for key, _ in COLUMNS:
            entry[key] = stats([_get(r, key) for r in records])
        snr_keys = sorted({k for r in records for k in (r.get("snr") or {})}, key=float, reverse=True)
        if snr_keys:
            entry["snr"] = {k: stats([(r.get("snr") or {}).get(k, {}).get("miou") for r in records]) for k in snr_keys}
        entry["train_seconds"] = stats([r.get("train_seconds") for r in records])
        table[row.name] = entry
    return table


def _drop(entry: dict, high: str, low: str) -> float | None:
    snr = entry.get("snr") or {}
    if not snr.get(high) or not snr.get(low):
        return None
    return snr[high]["mean"] - snr[low]["mean"]


def targets(table: dict[str, dict]) -> dict[str, dict]:
    """Issue #12 item 8's targets for row 6 (and the quantized rows), from the measured table."""
    full, base, cont = table.get("6_full"), table.get("1_baseline"), table.get("3_nonq_sd")
    out: dict[str, dict] = {}
    if full and full.get("miou") and full.get("shuffled_miou"):
        own, shuffled = full["miou"]["mean"], full["shuffled_miou"]["mean"]
        out["a_listens"] = {"rule": "row 6 shuffled-audio mIoU <= 0.5 x its mIoU", "miou": own,
                            "shuffled_miou": shuffled, "met": shuffled <= 0.5 * own}
    if full and base and full.get("miou") and base.get("miou"):
        gain = full["miou"]["mean"] - base["miou"]["mean"]
        out["b_beats_row1"] = {"rule": "row 6 - row 1 >= 0.05 mIoU", "gain": gain, "met": gain >= 0.05}
    if full and full.get("miou") and full["miou"]["n"] > 1:
        out["c_seed_std"] = {"rule": "row 6 seed std <= 0.03 mIoU", "std": full["miou"]["std"],
                             "n": full["miou"]["n"], "met": full["miou"]["std"] <= 0.03}
    if cont and (cont_drop := _drop(cont, "10", "-5")) is not None:
        drops = {name: _drop(table[name], "10", "-5") for name in ("4_q_sd", "5_q_sd_avsr", "6_full") if name in table}
        drops = {k: v for k, v in drops.items() if v is not None}
        if drops:
            out["d_noise"] = {"rule": "10 -> -5 dB: each quantized row loses <= 0.5 x what row 3 loses",
                              "row3_drop": cont_drop, "drops": drops,
                              "met": all(v <= 0.5 * max(cont_drop, 0.0) for v in drops.values())}
    return out


def tsne_results(out: Path, spec: StudySpec) -> dict[str, dict]:
    from avseg.study.tsne import decomposition_ratio

    results = {}
    for row in spec.tsne.rows:
        path = run_folder(out, row, spec.tsne.seed) / "tokens.npz"
        if path.is_file():
            with np.load(path) as data:
                tokens, meta = data["tokens"], json.loads(str(data["meta"]))
            results[row] = decomposition_ratio(tokens, meta)
    return results


def _fmt(entry: dict | None, digits: int = 3) -> str:
    if not entry:
        return "–"
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}" if entry["n"] > 1 else f"{entry['mean']:.{digits}f} (n=1)"


def markdown(results: dict) -> str:
    lines = [f"# Study {results['name']}", "", results.get("description", "").strip(), "",
             f"Benchmark: {results['benchmark_line']}. Seeds: {results['seeds']}. "
             f"Mean ± sample std over the finished seeds (n per row in results.json).", ""]
    header = ["row"] + [title for _, title in COLUMNS] + ["n"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, entry in results["rows"].items():
        n = entry["miou"]["n"] if entry.get("miou") else 0
        cells = [entry["label"] + ("" if entry["paper"] else " *")]
        cells += [_fmt(entry.get(key), 1 if key == "perplexity_global" or key.startswith("code_sets") else 3) for key, _ in COLUMNS] + [str(n)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "\\* not in the paper.", ""]
    if results.get("baselines"):
        b = results["baselines"]
        lines += [f"Trivial baselines on the same test clips: all background mIoU {b['all_background']:.3f}; every "
                  f"visible object with its class, sounding or not (ignores the audio) {b['every_object']:.3f}.", ""]
    snr_rows = {k: v for k, v in results["rows"].items() if v.get("snr")}
    if snr_rows:
        values = list(next(iter(snr_rows.values()))["snr"])
        lines += ["## mIoU at test SNR (dB)", "", "| row | " + " | ".join(values) + " |", "|---|" + "---|" * len(values)]
        for entry in snr_rows.values():
            lines.append(f"| {entry['label']} | " + " | ".join(_fmt(entry['snr'].get(v)) for v in values) + " |")
        lines.append("")
    if results.get("tsne"):
        lines += ["## Decomposition ratio (tokens of multi-source clips: own sources / other classes)", ""]
        for row, value in results["tsne"].items():
            ratio = "–" if value.get("ratio") is None else f"{value['ratio']:.3f}"
            lines.append(f"- {row}: {ratio} ({value.get('tokens', 0)} tokens)")
        lines.append("")
    if results.get("targets"):
        lines += ["## Targets (issue #12 item 8)", ""]
        for key, value in results["targets"].items():
            lines.append(f"- {key}: {'met' if value['met'] else 'NOT met'}: {value['rule']} "
                         f"({', '.join(f'{k} {v:.3f}' for k, v in value.items() if isinstance(v, float))})")
        lines.append("")
    count = len(results.get("sessions") or [])
    wall = ("not recorded (no `avseg study` invocation of this spec trained runs in this folder)"
            if results.get("session_seconds") is None else
            f"{results['session_seconds'] / 60:.1f} min over {count} `avseg study` invocation{'s' * (count != 1)} "
            "of this spec that trained runs (runs another spec trained in the same folder count in its time)")
    lines.append(f"Machine: {results['machine']}. Wall time: {wall}; "
                 f"training time summed over finished runs: {results['train_seconds_total'] / 60:.1f} min.")
    return "\n".join(lines) + "\n"


def baselines(spec: StudySpec, out: Path) -> dict[str, float] | None:
    """The trivial baselines of the study's test clips (DIR/baselines.json, computed once)."""
    path = out / "baselines.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    data_root = out / "data" / "bench"
    if not (data_root / "_synth" / "info.json").is_file():
        return None
    from avseg.study.measure import data_baselines

    config = run_config(spec, spec.rows[0].name, spec.seeds[0], data_root, out / "runs" / "_baselines", None)
    result = data_baselines(config, data_root)
    path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


# One line per `avseg study` invocation that trained runs in the folder: which spec, when, how long,
# how many runs, on what. Specs may share a folder (codebook.yaml and medium.yaml do), and a study
# may be resumed over several invocations; each spec's wall time is the sum of its own lines, so a
# `--report-only` pass (which trains nothing) keeps it.
SESSIONS = "sessions.jsonl"


def record_session(out: Path, spec: StudySpec, *, seconds: float, runs_trained: int, machine: dict) -> None:
    """Append this invocation to DIR/sessions.jsonl (nothing when it trained no run)."""
    if runs_trained <= 0:
        return
    import datetime

    line = {"spec": spec.name, "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "seconds": seconds, "runs_trained": runs_trained, "machine": machine}
    with open(out / SESSIONS, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")


def sessions(out: Path, spec_name: str) -> list[dict]:
    """The invocations of spec `spec_name` that trained runs in `out` (unreadable lines are named and skipped)."""
    import warnings

    path = out / SESSIONS
    if not path.is_file():
        return []
    found = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
            if line["spec"] == spec_name:
                found.append({**line, "seconds": float(line["seconds"])})
        except (ValueError, KeyError, TypeError) as error:
            warnings.warn(f"{path}:{number}: not a session record ({error}); left out of the wall time", stacklevel=2)
    return found


def write_results(spec: StudySpec, out: Path, *, machine: dict) -> dict:
    """Aggregate the finished runs into DIR/results.json, results.md and report.html. The wall time is
    that of this spec's invocations in DIR/sessions.jsonl; `machine` is used when there are none."""
    from avseg.study.report import write_report

    runs = load_runs(out, spec)
    table = row_table(spec, runs)
    b = spec.benchmark
    results = {
        "name": spec.name, "description": spec.description, "spec": spec_to_dict(spec),
        "benchmark_line": f"synthetic AVSS ({'+'.join(b.subsets)}), tier {b.tier}, {b.clips} clips, "
                          f"{b.image_size} px, {b.num_classes} classes, seed {b.seed}",
        "seeds": list(spec.seeds), "rows": table, "targets": targets(table), "tsne": tsne_results(out, spec),
        "baselines": baselines(spec, out),
        "runs_finished": sum(len(v) for v in runs.values()), "runs_total": len(spec.rows) * len(spec.seeds),
        "train_seconds_total": float(sum(r.get("train_seconds") or 0 for v in runs.values() for r in v)),
        "session_seconds": None, "sessions": sessions(out, spec.name), "machine": machine,
    }
    if results["sessions"]:
        results["session_seconds"] = round(sum(line["seconds"] for line in results["sessions"]), 1)
        results["machine"] = results["sessions"][-1]["machine"]
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    text = markdown(results)
    (out / "results.md").write_text(text, encoding="utf-8")
    write_report(results, spec, out, text)
    return results


# The record of a study: enough to re-aggregate it (`--report-only`) and, copied back into a study
# folder, to resume it without redoing its finished runs (their measure.json is the mark).
RECORD_TOP = ("spec.yaml", "results.json", "results.md", "report.html", "baselines.json", SESSIONS)
RECORD_RUN = ("measure.json", "log.jsonl", "config.yaml", "tokens.npz")


def export_record(out: str | Path, dest: str | Path) -> int:
    """Copy the study's record files (no data, no checkpoints) from `out` to `dest`; returns how many."""
    import shutil

    out, dest = Path(out), Path(dest)
    files = [out / name for name in RECORD_TOP if (out / name).is_file()]
    files += [path for path in sorted((out / "runs").glob("*/seed*/*")) if path.name in RECORD_RUN]
    for path in files:
        target = dest / path.relative_to(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return len(files)
