"""CAVP's losses: the contrastive loss against a hand-computed case, the anchors it draws, and the
cross-entropy that never sees the shuffled half."""

import math

import pytest
import torch

from avseg.models.cavp_loss import CavpCriterion, contrast_anchors, info_nce


def test_info_nce_equals_a_hand_computed_case():
    # a0 and a1 share label 1 (cosine 0.6), a2 has label 2 (cosine 0 with a0, 0.8 with a1); T = 0.5
    anchors = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    labels = torch.tensor([1, 1, 2])
    loss0 = -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(0.0)))  # positive a1, negative a2
    loss1 = -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(1.6)))  # positive a0, negative a2
    loss2 = 0.0  # a2 has no positive
    expected = (loss0 + loss1 + loss2) / 3
    assert float(info_nce(anchors, labels, 0.5)) == pytest.approx(expected, rel=1e-6)


def _reference(anchors: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """The formula of `info_nce`'s docstring, one anchor and one positive at a time."""
    m = len(labels)
    s = (anchors @ anchors.T / temperature).tolist()
    total = 0.0
    for i in range(m):
        positives = [j for j in range(m) if j != i and labels[j] == labels[i]]
        negatives = [j for j in range(m) if labels[j] != labels[i]]
        if not positives:
            continue
        neg = sum(math.exp(s[i][n]) for n in negatives)
        total += -sum(math.log(math.exp(s[i][p]) / (math.exp(s[i][p]) + neg)) for p in positives) / len(positives)
    return total / m


def test_info_nce_equals_the_formula_on_random_anchors():
    generator = torch.Generator().manual_seed(0)
    anchors = torch.nn.functional.normalize(torch.randn(9, 5, generator=generator), dim=1).double()
    labels = torch.tensor([0, 0, 0, 3, 3, 7, 7, 7, 9])
    assert float(info_nce(anchors, labels, 0.1)) == pytest.approx(_reference(anchors, labels, 0.1), rel=1e-9)


def _fused_and_labels():
    """2 frames 8 x 8, fused features 4 x 4 (nearest label downsampling picks every other pixel)."""
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    labels[0, :4, :] = 1  # class 1: 8 fused positions
    labels[1, :2, :] = 2  # class 2: 4 fused positions
    labels[1, 6:, :] = 255  # ignored
    fused = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    return fused, labels


def test_anchors_leave_out_small_classes_and_label_shuffled_pixels_with_the_shuffled_target():
    fused, labels = _fused_and_labels()
    paired_labels = torch.zeros_like(labels)
    paired_labels[0] = labels[0]  # frame 0's shuffled audio matches, frame 1's does not
    embeddings, anchor_labels = contrast_anchors(fused, labels, fused * 2, paired_labels, max_views=6)
    counts = {c: int((anchor_labels == c).sum()) for c in anchor_labels.unique().tolist()}
    # class 1: 6 drawn of its 8; class 2 (4 < 6 pixels) left out as an original anchor; background
    # 6 originals + the shuffled ones: k = min(6, 12 foreground positions, 14 background) = 6 more,
    # labelled 1 (frame 0, matched) or 0 (frame 1, mismatched): classes 1 and 0 only, never 2 or 255
    assert set(counts) <= {0, 1} and counts[1] >= 6 and counts[0] >= 6
    assert counts[0] + counts[1] == 6 + 6 + 6
    assert embeddings.shape == (18, 3)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(18))
    assert contrast_anchors(fused, labels, fused, paired_labels, max_views=9) is None  # no class has 9 pixels


def test_the_shuffled_half_never_enters_the_cross_entropy():
    frames, classes = 3, 4
    generator = torch.Generator().manual_seed(0)
    semantic = torch.randint(0, classes, (frames, 8, 8), generator=generator)
    original = torch.randn(frames, classes, 8, 8, generator=generator)
    shuffled = (torch.randn(frames, classes, 8, 8, generator=generator) * 50).requires_grad_()
    logits = torch.cat([original, shuffled])
    criterion = CavpCriterion(binary=False, contrast_weight=0.0)
    outputs = {"semantic_logits": logits, "fused": torch.randn(2 * frames, 2, 2, 2)}
    losses = criterion(outputs, semantic, paired_semantic=torch.zeros_like(semantic))
    alone = criterion({"semantic_logits": original}, semantic)["loss_seg"]
    assert float(losses["loss_seg"].detach()) == pytest.approx(float(alone), rel=1e-6)
    losses["loss_seg"].backward()
    assert shuffled.grad is not None and not shuffled.grad.any()  # in the graph, with zero gradient


def test_cross_entropy_ignores_255_and_binary_targets_become_background_and_foreground():
    logits = torch.randn(1, 2, 4, 4)
    semantic = torch.ones(1, 4, 4, dtype=torch.long) * 3  # any foreground id counts as 1 on binary data
    semantic[0, 0] = 255
    loss = CavpCriterion(binary=True)({"semantic_logits": logits}, semantic)["loss_seg"]
    expected = torch.nn.functional.cross_entropy(logits[:, :, 1:], torch.ones(1, 3, 4, dtype=torch.long))
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
