"""The noise sweep of a finished study, at SNRs of your choice, from its runs' checkpoints (no training).

The study measures its `snr.values` when each run finishes; this re-mixes the study's test split at
other SNRs (same scenes, sources and noise, only the balance changes) and measures every finished
run of the rows named, so that the sweep can go further than the spec's without training again:

    python scripts/snr_sweep.py configs/study/medium.yaml --out runs/study/medium \\
        --rows 3_nonq_sd,4_q_sd,5_q_sd_avsr,6_full --snr=-10,-15,-20 --json runs/study/medium/snr_extra.json

Prints mIoU mean ± sample std over the seeds found, per row and SNR.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="the study folder")
    parser.add_argument("--rows", required=True, help="comma-separated rows of the spec")
    parser.add_argument("--snr", required=True, help="comma-separated test SNRs in dB, e.g. --snr=-10,-20")
    parser.add_argument("--json", type=Path, help="also write the per-seed values here")
    args = parser.parse_args(argv)

    from avseg.engine.checkpoint import model_from_checkpoint
    from avseg.errors import UserError
    from avseg.study.measure import measure_model
    from avseg.study.runner import ensure_data, selected_runs
    from avseg.study.spec import load_spec

    try:
        spec = load_spec(args.spec)
        runs = selected_runs(spec, [r.strip() for r in args.rows.split(",") if r.strip()])
        values = [float(v) for v in args.snr.split(",")]
    except (UserError, ValueError) as error:
        print(f"snr_sweep: {error}", file=sys.stderr)
        return 2
    roots = {v: ensure_data(spec, args.out / "data" / f"snr_{v:g}", snr_db=v) for v in values}
    found: dict[str, dict[str, list[float]]] = {}
    for row, seed in runs:
        checkpoint = args.out / "runs" / row / f"seed{seed}" / "best.pt"
        if not (checkpoint.parent / "measure.json").is_file():
            print(f"snr_sweep: {checkpoint.parent}: not a finished run, left out", file=sys.stderr)
            continue
        model, stored, _ = model_from_checkpoint(checkpoint)
        for value, root in roots.items():
            miou = measure_model(model, stored, root, shuffled=False, objects=False)["miou"]
            found.setdefault(row, {}).setdefault(f"{value:g}", []).append(miou)
    print("| row | " + " | ".join(f"{v:g}" for v in values) + " |")
    print("|---|" + "---|" * len(values))
    for row, by_snr in found.items():
        cells = []
        for value in values:
            seeds = by_snr.get(f"{value:g}", [])
            std = statistics.stdev(seeds) if len(seeds) > 1 else float("nan")
            cells.append(f"{statistics.mean(seeds):.3f} ± {std:.3f} (n={len(seeds)})" if seeds else "–")
        print(f"| {row} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(found, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
