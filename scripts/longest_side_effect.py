"""How much `data.resize` moves a TRAINED model's metrics on non-square clips (docs/model.md).

QSD §4 evaluates "with the longest side 224"; the AVSBench code squashes every frame to a square.
This script measures the difference with trained models, paired per seed:

1. `avseg synth --layout avss` (square clips), then every frame and label stretched to a 3:2
   aspect (width x 1.5; labels with nearest neighbour, so their colours stay exact);
2. per seed, `avseg train` of the small CPU QSD config on them (training uses the AVSS reference's
   crop-resize either way);
3. `avseg eval` of the same best.pt with `data.resize=square` and `data.resize=longest_side`.

    python scripts/longest_side_effect.py --out runs/longest_side --seeds 0 1 2

Writes OUT/results.json (every number of every seed, the paired differences) and prints a table.
Resumable: finished trainings and evaluations are kept.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from PIL import Image

CONFIG = "configs/cpu/qsd_r18_synth_avss.yaml"


def avseg(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "avseg.cli", *args], check=True)


def stretch(root: Path, factor: float) -> int:
    """Every frame (bilinear) and label (nearest) of an AVSS-layout folder, width x factor."""
    done = root / "_stretched.json"
    if done.is_file():
        return json.loads(done.read_text())["images"]
    count = 0
    for path in sorted(root.glob("v*/*/frames/*.jpg")) + sorted(root.glob("v*/*/labels_*/*.png")):
        image = Image.open(path)
        image.load()
        width, height = image.size
        size = (int(round(width * factor)), height)
        frame = path.suffix == ".jpg"
        resample = Image.Resampling.BILINEAR if frame else Image.Resampling.NEAREST
        image.resize(size, resample).save(path, **({"quality": 95} if frame else {}))
        count += 1
    done.write_text(json.dumps({"images": count, "width_factor": factor}))
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--clips", type=int, default=120)
    parser.add_argument("--synth-size", type=int, default=128, help="side of the generated square clips")
    parser.add_argument("--image-size", type=int, default=96, help="the model's input side (data.image_size)")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()

    data = args.out / "data"
    if not (data / "metadata.csv").is_file():
        avseg("synth", "--layout", "avss", "--out", str(data), "--clips", str(args.clips),
              "--image-size", str(args.synth_size), "--num-classes", "8", "--avss-subsets", "v1s,v1m",
              "--no-progress")
    stretched = stretch(data, 1.5)
    common = [f"data.root={data}", f"data.image_size={args.image_size}", "data.avss_subsets=[v1s,v1m]",
              "data.num_workers=1"]
    results: dict = {"command": " ".join(sys.argv), "stretched_images": stretched, "seeds": {}}
    for seed in args.seeds:
        run = args.out / f"seed{seed}"
        if not (run / "best.pt").is_file() or not (run / "train_done.json").is_file():
            avseg("train", CONFIG, *common, f"seed={seed}", f"train.epochs={args.epochs}",
                  f"train.lr_drop_epochs=[{args.epochs - 2}]", f"output_dir={run}", "--resume", "auto")
            (run / "train_done.json").write_text("{}")
        scores = {}
        for mode in ("square", "longest_side"):
            where = run / f"eval_{mode}"
            if not (where / "metrics.json").is_file():
                avseg("eval", CONFIG, *common, f"data.resize={mode}", "--checkpoint", str(run / "best.pt"),
                      "--out", str(where))
            scores[mode] = json.loads((where / "metrics.json").read_text())
        results["seeds"][seed] = scores
    keys = [k for k in ("miou", "f", "fscore") if k in next(iter(results["seeds"].values()))["square"]]
    summary = {}
    for key in keys:
        pairs = [(s["square"][key], s["longest_side"][key]) for s in results["seeds"].values()]
        diffs = [b - a for a, b in pairs]
        summary[key] = {"square": [a for a, _ in pairs], "longest_side": [b for _, b in pairs], "diff": diffs,
                        "diff_mean": statistics.fmean(diffs),
                        "diff_std": statistics.stdev(diffs) if len(diffs) > 1 else 0.0}
        print(f"{key}: square {[round(a, 4) for a, _ in pairs]}  longest_side {[round(b, 4) for _, b in pairs]}  "
              f"longest_side - square {summary[key]['diff_mean']:+.4f} ± {summary[key]['diff_std']:.4f}")
    results["summary"] = summary
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
