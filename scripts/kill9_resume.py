"""Measure crash-safe resume: `avseg train` killed with SIGKILL (once while a checkpoint is being
written, once mid-epoch), resumed with `--resume auto`, against the same run uninterrupted.

    PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/kill9_resume.py [--work DIR]

Prints one JSON object: the steps at which each kill landed, whether a checkpoint temp file was
left and then removed, the largest parameter difference between the two final last.pt files,
and whether log.jsonl holds each step once. docs/reliability.md records the result.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = "configs/cpu/qsd_r18_synth_ms3.yaml"
TINY = ["data.image_size=32", "model.d_model=32", "model.n_heads=4", "model.ffn_dim=64", "model.encoder_layers=1",
        "model.qsd.asd_layers=1", "model.decoder_layers=2", "model.quantizer.codebook_size=16", "model.qsd.num_tokens=3",
        "data.num_workers=1", "train.log_every=1", "train.eval_every=1", "train.lr_drop_epochs=[1]",
        "data.batch_size=2", "train.max_steps=9", "train.checkpoint_every_steps=2", "model.dropout=0.1",
        "data.horizontal_flip=true", "train.contrastive_share=0.5"]


def command(root: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "avseg.cli", "train", CONFIG, f"data.root={root}", f"output_dir={out}", *TINY, *extra]


def train_steps(out: Path) -> list[int]:
    path = out / "log.jsonl"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "train":
            steps.append(int(record["step"]))
    return steps


def kill_when(root: Path, out: Path, ready, resume: bool) -> dict:
    """Start a run, SIGKILL it as soon as `ready(out)` holds; what was on disk at that moment."""
    process = subprocess.Popen(command(root, out, *(["--resume", "auto"] if resume else [])),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while process.poll() is None and time.monotonic() < deadline and not ready(out):
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    temps = sorted(p.name for p in out.glob(".*.pt.*.tmp"))
    return {"killed_after_step": max(train_steps(out), default=0), "temp_files_left": temps}


def max_difference(a: Path, b: Path) -> float:
    import torch

    first = torch.load(a, map_location="cpu", weights_only=True)["model"]
    second = torch.load(b, map_location="cpu", weights_only=True)["model"]
    assert first.keys() == second.keys()
    return max(float((first[k].double() - second[k].double()).abs().max()) if first[k].numel() else 0.0
               for k in first)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temp folder)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="avseg-kill9-"))
    root = work / "data"
    subprocess.run([sys.executable, "-m", "avseg.cli", "synth", "--layout", "ms3", "--out", str(root), "--clips", "8",
                    "--seed", "3", "--image-size", "32", "--num-classes", "4", "--split", "0.75,0.125,0.125",
                    "--no-progress"], check=True, stdout=subprocess.DEVNULL)
    start = time.perf_counter()
    subprocess.run(command(root, work / "full"), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    full_s = time.perf_counter() - start
    cut = work / "cut"
    writing = lambda out: (out / "last.pt").is_file() and any(out.glob(".last.pt.*.tmp"))  # 2nd write on
    kills = [kill_when(root, cut, writing, resume=False),  # while last.pt is being replaced
             kill_when(root, cut, lambda out: max(train_steps(out), default=0) >= 5, resume=True)]  # mid-epoch
    final = subprocess.run(command(root, cut, "--resume", "auto"), capture_output=True, text=True)
    steps = train_steps(cut)
    result = {
        "kills": kills,
        "resume_exit_code": final.returncode,
        "temp_files_after_resume": sorted(p.name for p in cut.glob(".*.pt.*.tmp")),
        "max_abs_parameter_difference": max_difference(work / "full" / "last.pt", cut / "last.pt"),
        "log_steps": steps,
        "log_each_step_once": steps == sorted(set(steps)),
        "uninterrupted_run_s": round(full_s, 1),
    }
    print(json.dumps(result, indent=1))
    return 0 if final.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
