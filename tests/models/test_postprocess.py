import math

import pytest
import torch

from avseg.models.postprocess import merge_masks, segment

HIGH, LOW = 10.0, -10.0


def _crafted() -> tuple[torch.Tensor, torch.Tensor]:
    """One 4x6 frame, K = 3 tokens, 3 classes.

    token 0: class id 2 (score ~0.88), mask on columns 0..3
    token 1: class id 3 (score ~0.62), mask on columns 2..5 (overlaps token 0 on columns 2, 3)
    token 2: "no object" (all scores low), mask everywhere
    row 3 is covered by no kept mask.
    """
    logits = torch.full((1, 3, 3), LOW)
    logits[0, 0, 1] = 2.0
    logits[0, 1, 2] = 0.5
    masks = torch.full((1, 3, 4, 6), LOW)
    masks[0, 0, :3, 0:4] = HIGH
    masks[0, 1, :3, 2:6] = HIGH
    masks[0, 2] = HIGH
    return logits, masks


def test_merge_picks_the_best_weighted_class_per_pixel():
    logits, masks = _crafted()
    merged = merge_masks(logits, masks, binary=False)
    expected = torch.tensor(
        [[2, 2, 2, 2, 3, 3]] * 3 + [[0, 0, 0, 0, 0, 0]], dtype=torch.int64
    ).unsqueeze(0)
    assert merged.dtype == torch.int64
    assert torch.equal(merged, expected)


def test_merge_mask_probability_breaks_ties_between_tokens():
    logits, masks = _crafted()
    masks[0, 0, :3, 3] = 0.5  # token 0 barely above 0.5 at column 3: token 1 wins there
    merged = merge_masks(logits, masks, binary=False)
    assert merged[0, 0, 3] == 3 and merged[0, 0, 2] == 2


def test_merge_binary_output_and_threshold():
    logits, masks = _crafted()
    merged = merge_masks(logits, masks, binary=True)
    assert set(merged.unique().tolist()) == {0, 1}
    assert torch.equal(merged[0, :3], torch.ones(3, 6, dtype=torch.int64))
    assert torch.equal(merged[0, 3], torch.zeros(6, dtype=torch.int64))
    # with every token kept, the "no object" token's mask covers row 3 as well
    everything = merge_masks(logits, masks, binary=True, score_threshold=0.0)
    assert bool((everything == 1).all())


def test_merge_resizes_to_the_requested_size():
    logits, masks = _crafted()
    merged = merge_masks(logits, masks, binary=False, size=(8, 12))
    assert merged.shape == (1, 8, 12)
    assert merged[0, 0, 0] == 2 and merged[0, 0, 11] == 3 and merged[0, 7, 0] == 0


def test_probability_to_logit_inverts_the_sigmoid_and_clamps():
    from avseg.models.postprocess import probability_to_logit

    p = torch.tensor([0.1, 0.5, 0.73, 0.999], dtype=torch.float64)
    expected = torch.log(p / (1 - p)).float()
    assert torch.allclose(probability_to_logit(p), expected, atol=1e-5)
    assert probability_to_logit(p).dtype == torch.float32
    edges = probability_to_logit(torch.tensor([0.0, 1.0]))
    low, high = torch.tensor([1e-6, 1 - 1e-6], dtype=torch.float32).double()  # the clamp bounds in float32
    bounds = torch.stack([torch.log(low / (1 - low)), torch.log(high / (1 - high))]).float()
    assert torch.allclose(edges, bounds, rtol=1e-4)  # finite: clamped to [1e-6, 1 - 1e-6]
    wider = probability_to_logit(torch.tensor([0.0, 1.0]), eps=1e-2)
    assert torch.allclose(wider, torch.tensor([-4.59512, 4.59512]), atol=1e-4)  # log(0.99 / 0.01)


# ----------------------------------------------------------------------------- TPAVI's dense maps


def _softmax(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def test_dense_single_channel_is_a_sigmoid_at_one_half():
    logits = torch.tensor([[[[1.5, -0.2], [0.0, -3.0]]]])  # [F=1, O=1, 2, 2]
    maps = segment({"semantic_logits": logits}, binary=True)
    sigmoid = [1 / (1 + math.exp(-v)) for v in logits.flatten().tolist()]
    assert maps["foreground"].flatten().tolist() == pytest.approx(sigmoid)
    assert maps["ids"][0].tolist() == [[1, 0], [0, 0]] and maps["ids"].dtype == torch.int64  # 0.5 is not > 0.5
    assert maps["probs"].shape == (1, 2, 2, 2)
    assert maps["probs"][0, 1].flatten().tolist() == pytest.approx(sigmoid)
    assert maps["probs"][0, 0].flatten().tolist() == pytest.approx([1 - p for p in sigmoid])


@pytest.mark.parametrize("binary", [False, True])
def test_dense_softmax_channels_semantic_and_binary(binary):
    # two pixels, three channels (0 = background): pixel 0 -> class 2, pixel 1 -> background
    logits = torch.tensor([[[[0.1, 2.0]], [[0.5, 0.3]], [[1.9, -1.0]]]])  # [1, 3, 1, 2]
    maps = segment({"semantic_logits": logits}, binary=binary)
    probs = [_softmax([float(logits[0, c, 0, x]) for c in range(3)]) for x in range(2)]
    foreground = [1 - p[0] for p in probs]
    assert maps["foreground"][0, 0].tolist() == pytest.approx(foreground)
    if binary:
        assert maps["ids"][0, 0].tolist() == [int(f > 0.5) for f in foreground] == [1, 0]
        assert maps["probs"].shape == (1, 2, 1, 2)
        assert maps["probs"][0, 0, 0].tolist() == pytest.approx([p[0] for p in probs])
        assert maps["probs"][0, 1, 0].tolist() == pytest.approx(foreground)
    else:
        assert maps["ids"][0, 0].tolist() == [2, 0]
        assert maps["probs"].shape == (1, 3, 1, 2)
        for c in range(3):
            assert maps["probs"][0, c, 0].tolist() == pytest.approx([p[c] for p in probs])


def test_dense_maps_are_resized_bilinearly_first():
    logits = torch.tensor([[[[0.0, 4.0]]]])  # [1, 1, 1, 2] -> [1, 4]
    maps = segment({"semantic_logits": logits}, binary=True, size=(1, 4))
    # half-pixel-centred bilinear (align_corners=False): 0, 1, 3, 4
    expected = [1 / (1 + math.exp(-v)) for v in (0.0, 1.0, 3.0, 4.0)]
    assert maps["foreground"][0, 0].tolist() == pytest.approx(expected)
    assert maps["ids"][0, 0].tolist() == [0, 1, 1, 1]
    same = segment({"semantic_logits": logits}, binary=True, size=(1, 2))
    assert same["foreground"][0, 0].tolist() == pytest.approx([0.5, 1 / (1 + math.exp(-4.0))])


def test_dense_binary_foreground_of_exactly_one_half_is_background():
    maps = segment({"semantic_logits": torch.zeros(1, 2, 1, 1)}, binary=True)  # p(background) = 0.5
    assert float(maps["foreground"]) == 0.5 and int(maps["ids"]) == 0
