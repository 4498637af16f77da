"""TPAVI's dense losses."""

import torch

from avseg.models.dense_criterion import DenseCriterion


def test_binary_loss_small_for_perfect_and_large_for_inverted():
    semantic = torch.zeros(2, 8, 8, dtype=torch.long)
    semantic[:, 2:5, 2:5] = 1
    perfect = {"semantic_logits": (semantic.float() * 40 - 20).unsqueeze(1)}
    inverted = {"semantic_logits": -perfect["semantic_logits"]}
    criterion = DenseCriterion(binary=True)
    assert criterion(perfect, semantic)["loss_total"] < 1e-6
    assert criterion(inverted, semantic)["loss_total"] > 10


def test_semantic_loss_and_valid_frames():
    semantic = torch.zeros(2, 4, 4, dtype=torch.long)
    semantic[0, :2] = 3
    logits = torch.full((2, 5, 4, 4), -20.0)
    logits.scatter_(1, semantic.unsqueeze(1), 20.0)
    logits[1] = torch.randn(5, 4, 4)  # frame 1 is wrong...
    criterion = DenseCriterion(binary=False)
    out = {"semantic_logits": logits}
    assert criterion(out, semantic, valid=torch.tensor([True, False]))["loss_seg"] < 1e-6  # ...but has no label
    assert criterion(out, semantic)["loss_seg"] > 0.1


def test_avm_regulariser_prefers_matching_audio():
    features = torch.zeros(1, 4, 2, 2)
    features[0, 1] = 5.0  # the sounding region's features point at channel 1
    logits = torch.full((1, 1, 4, 4), 10.0)
    matching = torch.zeros(1, 1, 4)
    matching[0, 0, 1] = 5.0
    other = torch.zeros(1, 1, 4)
    other[0, 0, 3] = 5.0
    semantic = torch.ones(1, 4, 4, dtype=torch.long)
    criterion = DenseCriterion(binary=True, avm_weight=1.0)
    good = criterion({"semantic_logits": logits, "stage_features": [features], "stage_audio": [matching]}, semantic)
    bad = criterion({"semantic_logits": logits, "stage_features": [features], "stage_audio": [other]}, semantic)
    assert good["loss_avm"] < bad["loss_avm"]
