"""`make demo`: the whole system on a fresh machine, end to end, on data it generates itself.

    synth (multi-source AVSS layout) -> check-data -> train a small CPU QSD -> evaluate on the
    test split -> render a held-out synthetic video with sound -> avseg predict on it ->
    runs/demo/report.html (metrics against the trivial baselines, curves, overlays, ...)

Every step is the same library call the CLI makes; the summary lands in runs/demo/summary.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEMO_CONFIG = Path("configs/cpu/qsd_r18_synth_avss.yaml")
NUM_CLASSES = 8
IMAGE_SIZE = 96


def _step(name: str) -> float:
    print(f"\n== {name}", flush=True)
    return time.perf_counter()


def generate_data(out: Path, clips: int, seed: int) -> dict:
    from avseg.data.synth import SynthConfig, generate

    start = _step(f"avseg synth --layout avss --avss-subsets v1m --clips {clips} --out {out}")
    config = SynthConfig(clips=clips, seed=seed, image_size=IMAGE_SIZE, num_classes=NUM_CLASSES, avss_subsets=("v1m",))
    summary = generate("avss", out, config, progress=True)
    print(summary.line())
    return {"clips": summary.clips, "splits": summary.splits, "seconds": round(time.perf_counter() - start, 1)}


def check_data(root: Path) -> dict:
    from avseg.data.check import print_summary, run_checks

    start = _step(f"avseg check-data --layout avss {root}")
    report = run_checks("avss", root)
    print_summary(report)
    if report.problems:
        raise SystemExit(f"the generated data set has {len(report.problems)} problems: see above")
    return {"clips_checked": report.clips_checked, "seconds": round(time.perf_counter() - start, 1)}


def demo_config(data: Path, out: Path, epochs: int, seed: int):
    from avseg.config import load_config

    return load_config(DEMO_CONFIG, [
        f"data.root={data}", "data.avss_subsets=[v1m]", f"data.image_size={IMAGE_SIZE}",
        f"model.num_classes={NUM_CLASSES}", f"train.epochs={epochs}", f"train.lr_drop_epochs=[{max(epochs - 2, 1)}]",
        f"output_dir={out}", f"seed={seed}", "train.log_every=5",
    ])


def train_model(config) -> dict:
    from avseg.engine.train import train

    start = _step(f"avseg train {DEMO_CONFIG} (epochs={config.train.epochs}, output {config.output_dir})")
    result = train(config)
    return {"result": result, "seconds": round(time.perf_counter() - start, 1)}


def evaluate_model(run: Path) -> dict:
    from avseg.data.build import class_names
    from avseg.engine.checkpoint import model_from_checkpoint
    from avseg.engine.evaluate import evaluate, evaluation_loader, write_results
    from avseg.metrics import format_table

    start = _step(f"avseg eval --checkpoint {run / 'best.pt'} --split test")
    model, config, _ = model_from_checkpoint(run / "best.pt")
    result = evaluate(model, evaluation_loader(config, "test"), config, split="test")
    write_results(run / "eval", result, class_names(config), {"checkpoint": str(run / "best.pt"), "split": "test"})
    print(format_table(result))
    return {"miou": result["miou"], "f": result["f"], "seconds": round(time.perf_counter() - start, 1)}


def predict_video(run: Path, out: Path) -> dict:
    from avseg.data.synth.video import ExampleSpec, class_bank_for, write_synthetic_video
    from avseg.inference.predictor import Predictor

    start = _step("render a held-out synthetic video with sound, then avseg predict on it")
    predictor = Predictor.from_checkpoint(run / "best.pt")
    _, bank = class_bank_for(predictor.class_names)
    video = write_synthetic_video(out / "demo_video.mp4", bank, ExampleSpec("demo_video.mp4", 8, True, 2024, (256, 256)))
    report = predictor.predict_video(video, out / "predict", progress=True, overwrite=True)
    print(f"predicted {len(report['frames'])} frames of {video}; overlay: {out / 'predict' / 'overlay.mp4'}")
    return {"video": str(video), "frames": len(report["frames"]), "seconds": round(time.perf_counter() - start, 1)}


def write_report(run: Path, out: Path) -> dict:
    from avseg.report.build import build_report

    start = _step(f"avseg report {run}")
    path, summary = build_report(run, out=out / "report.html")
    main = summary["model"]["main_metric"]
    print(f"test {main} {summary['model'][main]:.4f}; " + ", ".join(
        f"{name} {result[main]:.4f}" for name, result in summary["baselines"].items()))
    return {"path": str(path.resolve()), "beats_baselines": summary["beats_baselines"],
            "baselines": {name: result[main] for name, result in summary["baselines"].items()},
            "seconds": round(time.perf_counter() - start, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avseg.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--clips", type=int, default=240)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    data, run = args.out / "data", args.out / "train"
    summary = {"synth": generate_data(data, args.clips, args.seed), "check": check_data(data)}
    summary["train"] = train_model(demo_config(data, run, args.epochs, args.seed))
    summary["eval"] = evaluate_model(run)
    summary["predict"] = predict_video(run, args.out)
    summary["report"] = write_report(run, args.out)
    summary["total_seconds"] = round(time.perf_counter() - start, 1)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    verdict = "beats" if summary["report"]["beats_baselines"] else "does NOT beat"
    print(f"\ndemo finished in {summary['total_seconds'] / 60:.1f} min; the model {verdict} every trivial baseline")
    print(f"report: {summary['report']['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
