"""The training loop: exact resume, the NaN stop, and learning on a small synthetic set."""

import math

import pytest
import torch

from avseg.data.build import build_dataset
from avseg.data.sample import collate_samples
from avseg.data.synth import SynthConfig, generate
from avseg.engine.checkpoint import load_checkpoint, model_from_checkpoint
from avseg.engine.evaluate import evaluate, evaluation_loader
from avseg.engine.runlog import read_log
from avseg.engine.train import TrainingDiverged, train
from avseg.metrics import AVSBenchMetric


class Interrupted(Exception):
    pass


def test_resumed_run_ends_with_the_parameters_of_an_uninterrupted_one(ms3_root, tmp_path, qsd_config):
    # 6 train clips, 2 per batch: 3 steps per epoch, 9 steps = 3 epochs, evaluated after each; the
    # learning rate drops x0.1 after epoch 2, that is AFTER the resume: a resumed run that does not
    # restore the schedule's position drops it one epoch late and ends elsewhere.
    # Dropout, flips and CAVP pairing draw random numbers: RNG states and data order must be restored.
    extra = ("data.batch_size=2", "train.max_steps=9", "train.checkpoint_every_steps=4", "model.dropout=0.1",
             "data.horizontal_flip=true", "train.contrastive_share=0.5", "train.eval_every=1",
             "train.lr_drop_epochs=[2]", "train.lr_drop_factor=0.1", "train.lr=1e-3")
    full = train(qsd_config(ms3_root, tmp_path / "full", *extra))
    assert full["steps"] == 9 and full["epochs"] == 3

    def stop_after_5(step):  # killed after step 5: last.pt is from step 4 (mid-epoch 1)
        if step == 5:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(qsd_config(ms3_root, tmp_path / "cut", *extra), on_step=stop_after_5)
    checkpoint = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert (checkpoint["step"], checkpoint["epoch"], checkpoint["extra"]["batches_done"]) == (4, 1, 1)
    with pytest.raises(Exception, match="--resume auto"):  # a fresh start never overwrites a run
        train(qsd_config(ms3_root, tmp_path / "cut", *extra))
    resumed = train(qsd_config(ms3_root, tmp_path / "cut", *extra), resume="auto")
    assert resumed["steps"] == 9 and resumed["best_step"] == full["best_step"]

    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "cut" / "last.pt")["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), rtol=0, atol=1e-6), key
    # every step after the resume saw the same losses and learning rates as the uninterrupted run
    # step 5 ran before the interruption and again after the resume: the log holds it once
    steps = [r["step"] for r in read_log(tmp_path / "cut" / "log.jsonl") if r["event"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == 9
    records = {}
    for run in ("full", "cut"):
        records[run] = {r["step"]: r for r in read_log(tmp_path / run / "log.jsonl") if r["event"] == "train"}
    lr_keys = [k for k in records["full"][1] if k.startswith("lr_")]
    assert lr_keys
    for step in range(5, 10):
        assert records["cut"][step]["loss_total"] == pytest.approx(records["full"][step]["loss_total"], abs=1e-6)
        for key in lr_keys:  # steps 1-6 at the base rate, 7-9 at a tenth of it
            factor = 0.1 if step >= 7 else 1.0
            assert records["cut"][step][key] == pytest.approx(records["full"][1][key] * factor, rel=1e-9), (step, key)
            assert records["full"][step][key] == pytest.approx(records["full"][1][key] * factor, rel=1e-9), (step, key)


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(ms3_root, tmp_path, tpavi_config,
                                                                           monkeypatch):
    import avseg.engine.pairing as pairing_module  # the training step's losses are computed there

    real = pairing_module.compute_losses
    calls = {"n": 0}

    def nan_at_step_3(*args, **kwargs):
        losses = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            losses["loss_seg"] = losses["loss_seg"] * float("nan")
            losses["loss_total"] = losses["loss_total"] + losses["loss_seg"]
        return losses

    monkeypatch.setattr(pairing_module, "compute_losses", nan_at_step_3)
    config = tpavi_config(ms3_root, tmp_path / "run", "data.batch_size=2", "train.max_steps=5",
                          "train.checkpoint_every_steps=1")
    with pytest.raises(TrainingDiverged) as info:
        train(config)
    message = str(info.value)
    assert "non-finite loss at step 3" in message and "loss_seg=nan" in message and "loss_total=nan" in message
    assert "last good checkpoint" in message and "step 2" in message
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    assert checkpoint["step"] == 2
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point())
    assert read_log(tmp_path / "run" / "log.jsonl")[-1]["event"] == "diverged"


def _trivial_j(dataset) -> dict[str, float]:
    batch = collate_samples([dataset[i] for i in range(len(dataset))])
    truth = batch.semantic.flatten(0, 1) > 0
    out = {}
    for name, value in (("all background", 0.0), ("all foreground", 1.0)):
        metric = AVSBenchMetric(5, probabilities=True)
        metric.update(torch.full(truth.shape, value), truth)
        out[name] = metric.compute()["j"]
    return out


def test_training_lowers_the_loss_and_beats_trivial_baselines(tmp_path, qsd_config):
    root = tmp_path / "data"  # 2 train clips
    generate("ms3", root, SynthConfig(clips=3, image_size=32, num_classes=4, seed=3, split=(0.75, 0.125, 0.125),
                                      workers=1))
    config = qsd_config(root, tmp_path / "run", "data.batch_size=2", "train.max_steps=20", "train.lr=2e-3",
                        "train.backbone_lr_mult=1.0", "train.grad_clip=1.0", "train.weight_decay=1e-4",
                        "train.checkpoint_every_steps=0", "train.checkpoint_every_epochs=0")
    train(config)
    records = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["event"] == "train"]
    assert len(records) == 20
    first = sum(r["loss_total"] for r in records[:2]) / 2
    last = sum(r["loss_total"] for r in records[-2:]) / 2
    assert last < 0.6 * first, (first, last)
    assert all(math.isfinite(r["lr_other"]) and r["grad_norm"] > 0 for r in records)
    assert 0 < records[-1]["codebook_global_usage"] <= 1 and records[-1]["codebook_global_perplexity"] >= 1

    model, _, checkpoint = model_from_checkpoint(tmp_path / "run" / "last.pt")
    assert checkpoint["class_names"] == ["background", "sounding"]
    dataset = build_dataset(config, "train")
    result = evaluate(model, evaluation_loader(config, "train"), config, split="train")
    baselines = _trivial_j(dataset)
    assert result["num_clips"] == len(dataset) == 2 and result["skipped"] == []
    assert result["j"] > max(baselines.values()) + 0.2, (result["j"], baselines)
