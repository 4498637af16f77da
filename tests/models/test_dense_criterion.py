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


# --- the official audio-visual matching loss, hand-computed ----------------------------------------

import math  # noqa: E402


def _kl_uniform_vs(v0: float, v1: float) -> float:
    """KL(softmax(0, 0) || softmax(v0, v1)) for two channels, by hand."""
    p = [math.exp(v0) / (math.exp(v0) + math.exp(v1)), math.exp(v1) / (math.exp(v0) + math.exp(v1))]
    return 0.5 * math.log(0.5 / p[0]) + 0.5 * math.log(0.5 / p[1])


def test_binary_avm_pools_logits_before_the_sigmoid_and_sums_over_frames():
    # one 1x1 stage map (2 channels: 2 and 0), logits [4, -2] over a 1x2 frame, silent audio (0, 0)
    features = torch.tensor([2.0, 0.0]).view(1, 2, 1, 1).repeat(2, 1, 1, 1)  # 2 identical frames
    logits = torch.tensor([4.0, -2.0]).view(1, 1, 1, 2).repeat(2, 1, 1, 1)
    outputs = {"semantic_logits": logits, "stage_features": [features], "stage_audio": [torch.zeros(1, 2, 2)]}
    loss = DenseCriterion(binary=True, avm_weight=0.5)(outputs, torch.zeros(2, 1, 2, dtype=torch.long))
    w = 1 / (1 + math.exp(-1.0))  # sigmoid(mean(4, -2)), not mean(sigmoid) = 0.55
    expected = 2 * _kl_uniform_vs(2 * w, 0.0)  # reduction "sum": both frames add up
    assert abs(loss["loss_avm"].item() - expected) < 1e-6
    assert abs(loss["loss_total"].item() - (loss["loss_seg"].item() + 0.5 * expected)) < 1e-6


def test_avss_avm_uses_the_hard_mask_and_averages_over_labelled_frames():
    features = torch.tensor([2.0, 0.0]).view(1, 2, 1, 1).repeat(2, 1, 1, 1)
    logits = torch.zeros(2, 3, 1, 2)
    logits[:, 2, 0, 0] = 5.0  # pixel 0: class 2; pixel 1: background (ties go to class 0)
    audio = torch.zeros(1, 2, 2)
    audio[0, 1] = torch.tensor([0.0, 9.0])  # frame 1: a very different audio, but it has no label
    outputs = {"semantic_logits": logits, "stage_features": [features], "stage_audio": [audio]}
    semantic = torch.zeros(2, 1, 2, dtype=torch.long)
    loss = DenseCriterion(binary=False, avm_weight=1.0)(outputs, semantic, valid=torch.tensor([True, False]))
    expected = _kl_uniform_vs(2 * 0.5, 0.0)  # mask pooled to 1x1: half the frame is foreground
    assert abs(loss["loss_avm"].item() - expected) < 1e-6


def test_cosine_avm_of_the_official_s4_script():
    # two pixels: the mask (sigmoid > 0.5) keeps the first, drops the second
    features = torch.tensor([[3.0, 10.0], [4.0, -10.0]]).view(1, 2, 1, 2)
    logits = torch.tensor([3.0, -3.0]).view(1, 1, 1, 2)
    audio = torch.tensor([4.0, 3.0]).view(1, 1, 2)
    outputs = {"semantic_logits": logits, "stage_features": [features], "stage_audio": [audio]}
    loss = DenseCriterion(binary=True, avm_weight=1.0, avm_form="cosine")(outputs, torch.ones(1, 1, 2, dtype=torch.long))
    cosine = (3 * 4 + 4 * 3) / (5 * 5)  # pooled (3, 4) / (1 + 1e-6) against (4, 3): 24/25
    assert abs(loss["loss_avm"].item() - (-math.log(cosine + 1e-6))) < 1e-6
