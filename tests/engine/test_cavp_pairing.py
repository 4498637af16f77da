"""CAVP's training step on hand-made batches: which frames are used, the match / mismatch target
rule, the sound bank, and a tiny overfit through the Trainer's step function."""

import contextlib

import pytest
import torch

from avseg.config import load_config
from avseg.data.sample import Batch
from avseg.engine.cavp_pairing import CavpPairing, SoundBank, build_pairing, make_pairs, select_frames
from avseg.errors import UserError
from avseg.models.build import build_criterion, build_model

T, S = 2, 8


def _batch(classes: list[tuple[int, ...]], marker_offset: float = 0.0) -> Batch:
    """One clip per entry; clip b shows one 2-row band per class of classes[b]; its audio is the
    constant b + marker_offset, so the audio a pair received tells where it came from."""
    size = len(classes)
    semantic = torch.zeros(size, T, S, S, dtype=torch.int64)
    for b, cls in enumerate(classes):
        for k, c in enumerate(cls):
            semantic[b, :, 2 * k:2 * k + 2] = c
    return Batch(
        frames=torch.randn(size, T, 3, S, S),
        log_mel=(torch.arange(size, dtype=torch.float32) + marker_offset).view(-1, 1, 1, 1).expand(size, T, 96, 64).clone(),
        semantic=semantic, frame_present=torch.ones(size, T, dtype=torch.bool),
        label_present=torch.ones(size, T, dtype=torch.bool), targets=[[] for _ in range(size)],
        clip_ids=[f"clip{b}" for b in range(size)], datasets=["avss"] * size, extras={},
    )


def _source(audio: torch.Tensor) -> list[float]:
    return [float(a.flatten()[0]) for a in audio]


def test_match_keeps_the_ground_truth_and_mismatch_gets_background():
    classes = [(1,), (1,), (2,), (1, 2), (2, 1), (3,)]
    batch = _batch(classes)
    pairs = make_pairs(batch, SoundBank(), per_clip=1, overwrite=False, rate=1.0,
                       generator=torch.Generator().manual_seed(0))
    sources = [int(s) for s in _source(pairs.paired_audio)]
    assert sorted(sources) == list(range(6)) and sources != list(range(6))  # a permutation, not the identity
    for i, j in enumerate(sources):
        match = set(classes[i]) == set(classes[j])
        assert bool(pairs.matched[i]) == match
        expected = pairs.labels[i] if match else torch.zeros_like(pairs.labels[i])
        assert torch.equal(pairs.paired_labels[i], expected)
    assert _source(pairs.audio) == list(range(6))  # the original pairs keep their own audio


def test_the_bank_gives_each_single_class_frame_audio_of_its_class_from_an_earlier_step():
    bank = SoundBank(size=1)
    classes = [(1,), (2,), (3,), (1, 2)]
    make_pairs(_batch(classes, marker_offset=100.0), bank, per_clip=1, overwrite=False, rate=1.0,
               generator=torch.Generator().manual_seed(0))  # fills the bank: audio 100, 101, 102 for 1, 2, 3
    assert sorted(bank.entries) == [1, 2, 3]  # the two-class frame is never banked
    # next step: classes 1, 2, 4 single-source, one multi-source; every mismatched pair may be overwritten
    classes = [(1,), (2,), (4,), (2, 1)]
    pairs = make_pairs(_batch(classes), bank, per_clip=1, overwrite=True, rate=1.0,
                       generator=torch.Generator().manual_seed(1))
    sources = _source(pairs.paired_audio)
    for i, source in enumerate(sources):
        if source >= 100:  # from the bank: the frame's own class, an earlier step's audio
            assert classes[i] == ({100.0: (1,), 101.0: (2,), 102.0: (3,)})[source]
            assert bool(pairs.matched[i]) and torch.equal(pairs.paired_labels[i], pairs.labels[i])
        else:
            shuffled_from = classes[int(source)]
            assert bool(pairs.matched[i]) == (set(shuffled_from) == set(classes[i]))
    overwritten = [i for i, s in enumerate(sources) if s >= 100]
    assert pairs.overwritten == len(overwritten) > 0
    # never the multi-source frame, never class 4 (nothing banked yet)
    assert 3 not in overwritten and 2 not in overwritten
    assert sorted(bank.entries) == [1, 2, 3, 4] and float(bank.pick(4).flatten()[0]) == 2.0


def test_no_overwrite_before_the_bank_epoch_and_rate_zero_overwrites_nothing():
    bank = SoundBank()
    make_pairs(_batch([(1,), (2,)], 100.0), bank, per_clip=1, overwrite=False, rate=1.0)
    for overwrite, rate in ((False, 1.0), (True, 0.0)):
        pairs = make_pairs(_batch([(1,), (2,), (1,), (2,)]), bank, per_clip=1, overwrite=overwrite, rate=rate,
                           generator=torch.Generator().manual_seed(2))
        assert pairs.overwritten == 0 and max(_source(pairs.paired_audio)) < 100


def test_sound_bank_is_first_in_first_out():
    bank = SoundBank(size=2)
    for value in (1.0, 2.0, 3.0):
        bank.push("dog", torch.full((2,), value))
    assert float(bank.pick("dog")[0]) == 2.0 and bank.pick("cat") is None
    latest = SoundBank(size=1)
    for value in (1.0, 2.0):
        latest.push(7, torch.full((2,), value))
    assert float(latest.pick(7)[0]) == 2.0


def test_only_present_labelled_frames_are_drawn():
    batch = _batch([(1,), (2,)])
    batch.label_present[0, 0] = False
    batch.frame_present[1, 1] = False
    assert select_frames(batch, 0, None) == [(0, 1), (1, 0)]
    assert len(select_frames(_batch([(1,), (2,)]), 1, torch.Generator().manual_seed(0))) == 2
    with pytest.raises(UserError, match="at least 2"):
        make_pairs(_batch([(1,)]), SoundBank(), per_clip=1, overwrite=False, rate=0.0)


SMALL = ["model.name=cavp", "model.backbone=r18", "model.num_classes=2", "data.image_size=32",
         "model.cavp.aspp_channels=16", "model.cavp.low_level_channels=8", "model.cavp.projector_hidden=16",
         "audio.freeze=false", "train.pairing=cavp", "model.cavp.max_views=8", "model.cavp.frames_per_clip=0"]


def test_the_pairing_is_refused_with_another_model_or_with_the_empty_target_share():
    with pytest.raises(UserError, match="model.name=cavp"):
        build_pairing(load_config(None, ["train.pairing=cavp"]), False)
    with pytest.raises(UserError, match="contrastive_share"):
        build_pairing(load_config(None, [*SMALL, "train.contrastive_share=0.5"]), False)
    with pytest.raises(UserError, match="train.pairing 'both'"):
        build_pairing(load_config(None, ["train.pairing=both"]), False)


def test_a_tiny_overfit_segments_by_listening():
    """Two frames, each showing BOTH objects (class 1 left, class 2 right); the audio says which
    one sounds. After a few dozen steps of CAVP's step the model segments the sounding one, which
    neither the all-background map nor a model ignoring the audio can do."""
    torch.manual_seed(0)
    config = load_config(None, SMALL)
    model, criterion = build_model(config), build_criterion(config)
    pairing = CavpPairing(config, class_agnostic=False)
    image = torch.zeros(3, 32, 32)
    image[0, :, :16], image[1, :, 16:] = 1.0, 1.0
    semantic = torch.zeros(2, 1, 32, 32, dtype=torch.long)
    semantic[0, 0, :, :16], semantic[1, 0, :, 16:] = 1, 2
    log_mel = torch.stack([torch.full((1, 96, 64), -1.0), torch.full((1, 96, 64), 1.0)])
    batch = Batch(frames=image.expand(2, 1, 3, 32, 32).clone(), log_mel=log_mel, semantic=semantic,
                  frame_present=torch.ones(2, 1, dtype=torch.bool), label_present=torch.ones(2, 1, dtype=torch.bool),
                  targets=[[], []], clip_ids=["a", "b"], datasets=["avss"] * 2, extras={})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for step in range(40):
        losses, _ = pairing.losses(model, batch, criterion, epoch=0, generator=torch.Generator().manual_seed(step),
                                   device=torch.device("cpu"), autocast=contextlib.nullcontext)
        optimizer.zero_grad()
        losses["loss_total"].backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        ids = model(batch.frames, batch.log_mel)["semantic_logits"].argmax(1)
    accuracy = float((ids == semantic[:, 0]).float().mean())
    background = float((semantic == 0).float().mean())  # the all-background map: 0.5
    assert accuracy > background + 0.4


def test_train_runs_the_cavp_step_with_the_poly_schedule_and_the_head_at_ten_times_the_lr(ms3_root, tmp_path):
    from avseg.engine.runlog import read_log
    from avseg.engine.train import train

    steps, lr = 3, 1e-3
    config = load_config("configs/cpu/cavp_r18_synth_avss.yaml", [
        f"data.root={ms3_root}", f"output_dir={tmp_path / 'run'}", "data.dataset=ms3", "model.num_classes=1",
        "data.image_size=32", "data.batch_size=2", "data.num_workers=0", "train.eval_every=0", "train.log_every=1",
        f"train.max_steps={steps}", f"train.lr={lr}", "model.cavp.bank_start_epoch=0", "model.cavp.max_views=4",
        "model.cavp.frames_per_clip=1", "train.checkpoint_every_steps=0"])
    train(config)
    records = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["event"] == "train"]
    assert len(records) == steps
    for k, record in enumerate(records, start=1):  # logged after k optimizer steps
        factor = (1 - k / steps) ** 0.9
        assert record["lr_backbone"] == pytest.approx(lr * factor, abs=1e-12)
        assert record["lr_aspp"] == pytest.approx(10 * lr * factor, abs=1e-12)
        assert {"loss_seg", "loss_contrast", "overwritten", "paired"} <= set(record)
