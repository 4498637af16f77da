"""Pieces of the engine: CLI help, the resumable sampler, AdamW groups, RNG round trip, data build."""

import random

import numpy as np
import pytest
import torch

from avseg.cli import main
from avseg.config import load_config
from avseg.data.build import ResumableDistributedSampler, build_dataset, class_names, sample_seed
from avseg.engine.optim import parameter_groups, set_train_mode
from avseg.engine.seeding import capture_rng_state, restore_rng_state
from avseg.errors import UserError
from avseg.models.build import build_model


@pytest.mark.parametrize("command, options", [
    ("train", ["--resume", "--device"]),
    ("eval", ["--checkpoint", "--split", "--out", "--save-masks", "--overlays", "--batch-size", "--device", "--no-progress"]),
])
def test_cli_help_lists_every_documented_option(command, options, capsys):
    """The options README section 2 and docs/training.md name are all in `--help`."""
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"avseg {command}" in out
    assert [o for o in options if o not in out] == []


def test_sampler_resumes_mid_epoch_and_splits_ranks_like_one_global_batch():
    data = list(range(10))
    one = ResumableDistributedSampler(data, num_replicas=1, rank=0, seed=3)
    one.set_epoch(2)
    order = list(one)
    assert sorted(order) == data
    one.set_epoch(2, start=4)
    assert list(one) == order[4:] and len(one) == 6
    one.set_epoch(3)
    assert list(one) != order  # a new permutation each epoch
    ranks = [ResumableDistributedSampler(data, num_replicas=2, rank=r, seed=3) for r in (0, 1)]
    for sampler in ranks:
        sampler.set_epoch(2)
    assert [i for pair in zip(*ranks) for i in pair] == order
    assert sample_seed(0, 1, 2) != sample_seed(0, 2, 1) and sample_seed(5, 1, 2) == sample_seed(5, 1, 2)


def test_rng_state_round_trip():
    state = capture_rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_state(state)
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1]) and first[2] == second[2]


def test_adamw_groups_scale_the_backbone_and_never_decay_norms_biases_or_the_codebook():
    config = load_config("configs/cpu/qsd_r18_synth_ms3.yaml", ["data.image_size=32", "model.d_model=32",
                                                                  "model.n_heads=4", "model.ffn_dim=64"])
    model = build_model(config)
    groups = {g["name"]: g for g in parameter_groups(model, lr=1e-4, backbone_lr_mult=0.5, weight_decay=5e-4)}
    assert set(groups) == {"backbone", "backbone_no_decay", "other", "other_no_decay"}
    assert groups["backbone"]["lr"] == 5e-5 and groups["other"]["lr"] == 1e-4
    assert groups["other_no_decay"]["weight_decay"] == 0.0 and groups["other"]["weight_decay"] == 5e-4
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    named = dict(model.named_parameters())
    assert id(model.quantizer.codebook) in ids["other_no_decay"]
    assert id(named["backbone.body.conv1.weight"]) in ids["backbone"]
    assert id(named["backbone.body.bn1.weight"]) in ids["backbone_no_decay"]
    assert all(id(p) in ids["other_no_decay"] for n, p in named.items() if n.endswith(".bias") and "backbone" not in n)
    trainable = sum(1 for p in model.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in groups.values()) == trainable
    set_train_mode(model, "frozen_backbone")
    assert not model.backbone.body.bn1.training and model.fusion.training


def test_class_names_and_dataset_build(ms3_root):
    config = load_config("configs/cpu/qsd_r18_synth_ms3.yaml", [f"data.root={ms3_root}", "data.image_size=32"])
    assert class_names(config) == ["background", "sounding"]
    assert len(build_dataset(config, "train")) == 6 and len(build_dataset(config, "val")) == 1
    config.data.dataset = "nope"
    with pytest.raises(UserError, match="data.dataset"):
        build_dataset(config, "train")
