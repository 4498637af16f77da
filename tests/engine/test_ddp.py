"""DDP: two gloo processes under torchrun train exactly like one process with the same global batch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avseg.data.synth import SynthConfig, generate
from avseg.engine.checkpoint import load_checkpoint
from avseg.engine.runlog import read_log
from avseg.engine.seeding import seed_everything
from avseg.engine.train import train
from avseg.models.build import build_model

REPO = Path(__file__).resolve().parents[2]
# batch-independent normalisation (every BN on its running statistics) and no dropout, so that
# splitting the batch over ranks cannot change the gradient; the paper's lr and gradient clipping
# (with clipping to 0.1 most gradient entries stay below Adam's eps, so Adam does not turn the
# rounding differences of the all-reduce into lr-sized steps)
COMMON = ["data.image_size=64", "train.max_steps=3", "train.lr=1e-4", "train.grad_clip=0.1", "train.batchnorm=eval", "model.dropout=0.0", "train.checkpoint_every_steps=0",
          "train.seed=7"]


def test_two_process_ddp_equals_one_process_with_the_same_global_batch(tmp_path, qsd_config):
    # 64 px: at 32 px the stride-32 level is 1 x 1 and its GroupNorm leaves gradients of pure
    # rounding noise, which Adam then turns into lr-sized steps of random sign
    root = tmp_path / "data"
    generate("ms3", root, SynthConfig(clips=8, image_size=64, num_classes=4, seed=3, split=(0.75, 0.125, 0.125),
                                      workers=1))
    single = qsd_config(root, tmp_path / "single", "data.batch_size=2", *COMMON)
    train(single)

    ddp_out = tmp_path / "ddp"
    overrides = [f"{k}={v}" for k, v in (("data.root", root), ("output_dir", ddp_out))]
    small = [ "model.d_model=32", "model.n_heads=4", "model.ffn_dim=64", "model.encoder_layers=1",
             "model.qsd.asd_layers=1", "model.decoder_layers=2", "model.quantizer.codebook_size=16", "model.qsd.num_tokens=3",
             "data.num_workers=0", "train.log_every=1", "train.eval_every=0", "train.lr_drop_epochs=[]"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "avseg.cli", "train", "configs/cpu/qsd_r18_synth_ms3.yaml", *overrides, *small,
               "data.batch_size=1", *COMMON]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "world size 2" in done.stderr

    a = load_checkpoint(tmp_path / "single" / "last.pt")
    b = load_checkpoint(ddp_out / "last.pt")
    assert a["step"] == b["step"] == 3 and b["extra"]["world_size"] == 2 and len(b["rng"]["per_rank"]) == 2
    # Adam turns gradient entries that are mostly rounding noise into lr-sized steps of random
    # sign: here the last ResNet stage, whose 2 x 2 maps feed a one-channel-per-group GroupNorm.
    # Such entries may differ by up to lr * steps; all but a small fraction must agree tightly.
    bound = 2 * single.train.lr * single.train.max_steps
    mismatched = total = 0
    for key, value in a["model"].items():
        diff = (value.float() - b["model"][key].float()).abs()
        assert float(diff.max()) <= bound, key
        mismatched += int((diff > 1e-6 + 1e-4 * value.float().abs()).sum())
        total += diff.numel()
    assert mismatched / total < 0.02, (mismatched, total)
    # the losses of each step (rank-averaged under DDP) are the full-batch losses, and the first
    # gradient (all-reduced over ranks) is the full-batch gradient
    logs = [{r["step"]: r for r in read_log(out / "log.jsonl") if r["event"] == "train"}
            for out in (tmp_path / "single", ddp_out)]
    assert logs[1][1]["grad_norm"] == pytest.approx(logs[0][1]["grad_norm"], rel=1e-5)
    for step in (1, 2, 3):
        for term in ("loss_total", "loss_ce", "loss_mask", "loss_dice", "loss_vq"):
            assert logs[1][step][term] == pytest.approx(logs[0][step][term], rel=1e-4), (step, term)
    seed_everything(7)
    start = build_model(single).state_dict()  # the initial weights of both runs
    assert sum(not torch.equal(start[k], v) for k, v in a["model"].items()) > 10  # the runs did train
