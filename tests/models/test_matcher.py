import itertools

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, generalized_box_iou

from avseg.models.matcher import HungarianMatcher, resize_masks
from avseg.structures import boxes_from_masks

NUM_CLASSES = 3


def _outputs(frames: int, k: int = 4, size: int = 8, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    boxes = torch.rand(frames, k, 4, generator=generator) * 0.5 + 0.25
    return {
        "pred_logits": torch.randn(frames, k, NUM_CLASSES, generator=generator) * 2,
        "pred_masks": torch.randn(frames, k, size, size, generator=generator) * 3,
        "pred_boxes": boxes,
    }


def _target(n: int, size: int = 16, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n):
        x0, y0 = torch.randint(0, size // 2, (2,), generator=generator).tolist()
        w, h = torch.randint(2, size // 2, (2,), generator=generator).tolist()
        masks[i, y0 : y0 + h, x0 : x0 + w] = True
    labels = torch.randint(1, NUM_CLASSES + 1, (n,), generator=generator)
    return {"labels": labels, "masks": masks}


def _pair_cost(matcher, logits, mask, box, label, tgt_mask, tgt_box, w=(2, 2, 5, 5, 2), alpha=0.25, gamma=2.0):
    """The cost of one prediction / target pair written out directly; w: class, mask, dice, L1, GIoU."""
    prob = logits.sigmoid()[label - 1]
    pos = alpha * (1 - prob) ** gamma * -torch.log(prob + 1e-8)
    neg = (1 - alpha) * prob**gamma * -torch.log(1 - prob + 1e-8)
    small = F.interpolate(tgt_mask[None, None].float(), size=mask.shape, mode="area")[0, 0]
    bce = F.binary_cross_entropy_with_logits(mask, small)
    p = mask.sigmoid()
    dice = 1 - (2 * (p * small).sum() + 1) / (p.sum() + small.sum() + 1)
    l1 = (box - tgt_box).abs().sum()
    giou = generalized_box_iou(
        box_convert(box[None], "cxcywh", "xyxy"), box_convert(tgt_box[None], "cxcywh", "xyxy")
    )[0, 0]
    return w[0] * (pos - neg) + w[1] * bce + w[2] * dice + w[3] * l1 - w[4] * giou


def test_cost_matrix_matches_pairwise_definition():
    matcher = HungarianMatcher()
    outputs, target = _outputs(1), _target(3)
    cost = matcher.cost_matrix(
        outputs["pred_logits"][0], outputs["pred_masks"][0], outputs["pred_boxes"][0], target
    )
    boxes = boxes_from_masks(target["masks"])
    assert cost.shape == (4, 3)
    for k, n in itertools.product(range(4), range(3)):
        expected = _pair_cost(
            matcher, outputs["pred_logits"][0, k], outputs["pred_masks"][0, k],
            outputs["pred_boxes"][0, k], int(target["labels"][n]), target["masks"][n], boxes[n],
        )
        assert torch.allclose(cost[k, n], expected, atol=1e-4), (k, n)


@pytest.mark.parametrize("seed", range(3))
def test_assignment_is_optimal_against_brute_force(seed):
    matcher = HungarianMatcher()
    counts = [0, 1, 2, 3]
    outputs = _outputs(len(counts), seed=seed)
    targets = [_target(n, seed=seed * 10 + n) for n in counts]
    matches = matcher(outputs, targets)
    assert len(matches) == len(counts)
    for frame, (n, (rows, cols)) in enumerate(zip(counts, matches)):
        assert rows.dtype == cols.dtype == torch.int64
        assert len(rows) == len(cols) == n
        if n == 0:
            continue
        cost = matcher.cost_matrix(
            outputs["pred_logits"][frame], outputs["pred_masks"][frame],
            outputs["pred_boxes"][frame], targets[frame],
        )
        best = min(
            sum(float(cost[k, j]) for j, k in enumerate(perm))
            for perm in itertools.permutations(range(4), n)
        )
        assert len(set(rows.tolist())) == n and sorted(cols.tolist()) == list(range(n))
        assert abs(float(cost[rows, cols].sum()) - best) < 1e-4


def test_matcher_finds_the_planted_assignment():
    target = _target(2, size=8)
    target["labels"] = torch.tensor([1, 3])
    logits = torch.full((1, 4, NUM_CLASSES), -8.0)
    masks = torch.full((1, 4, 8, 8), -8.0)
    boxes = torch.full((1, 4, 4), 0.5)
    for pred, tgt in ((3, 0), (1, 1)):
        logits[0, pred, target["labels"][tgt] - 1] = 8.0
        masks[0, pred][target["masks"][tgt]] = 8.0
        boxes[0, pred] = boxes_from_masks(target["masks"])[tgt]
    outputs = {"pred_logits": logits, "pred_masks": masks, "pred_boxes": boxes}
    rows, cols = HungarianMatcher()(outputs, [target])[0]
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 3, 1: 1}


def test_costs_are_fp32_under_bf16_autocast():
    matcher = HungarianMatcher()
    outputs = {k: v.bfloat16() for k, v in _outputs(1).items()}
    target = _target(3)
    keys = ("pred_logits", "pred_masks", "pred_boxes")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cost = matcher.cost_matrix(*(outputs[k][0] for k in keys), target)
    reference = matcher.cost_matrix(*(outputs[k][0].float() for k in keys), target)
    assert cost.dtype == torch.float32
    assert torch.equal(cost, reference)


def test_matcher_without_boxes_and_label_check():
    outputs = _outputs(1)
    del outputs["pred_boxes"]
    target = _target(2)
    rows, cols = HungarianMatcher()(outputs, [target])[0]
    # without boxes the cost is class + mask + dice only: the pair costs with zero box weights
    cost = torch.tensor([[float(_pair_cost(None, outputs["pred_logits"][0, k], outputs["pred_masks"][0, k],
                                           torch.full((4,), 0.5), int(target["labels"][n]), target["masks"][n],
                                           torch.full((4,), 0.5), w=(2, 2, 5, 0, 0)))
                          for n in range(2)] for k in range(4)])
    best = min(float(cost[a, 0] + cost[b, 1]) for a, b in itertools.permutations(range(4), 2))
    assert sorted(cols.tolist()) == [0, 1]
    assert float(cost[rows, cols].sum()) == pytest.approx(best, abs=1e-4)
    bad = _target(1)
    bad["labels"] = torch.tensor([0])
    with pytest.raises(ValueError, match="1..3"):
        HungarianMatcher()(outputs, [bad])


def test_boxes_from_masks_and_area_resize():
    masks = torch.zeros(2, 4, 8, dtype=torch.bool)
    masks[0] = True
    masks[1, 1:3, 2:4] = True
    boxes = boxes_from_masks(masks)
    assert torch.allclose(boxes[0], torch.tensor([0.5, 0.5, 1.0, 1.0]))
    assert torch.allclose(boxes[1], torch.tensor([3 / 8, 2 / 4, 2 / 8, 2 / 4]))
    small = resize_masks(masks, (2, 4))
    assert small.dtype == torch.float32 and small.shape == (2, 2, 4)
    assert torch.allclose(small[1], torch.tensor([[0, 0.5, 0, 0], [0, 0.5, 0, 0]]))


def test_slot_order_prior_breaks_ties_towards_low_slots_and_defaults_off():
    # every slot predicts the same thing: without the prior any slot may win; with it, slot 0 then 1
    target = _target(2, size=8)
    outputs = {key: value[:, :1].expand(-1, 5, *value.shape[2:]).clone() for key, value in _outputs(1, k=1).items()}
    rows, _ = HungarianMatcher(cost_slot=0.5)(outputs, [target])[0]
    assert sorted(rows.tolist()) == [0, 1]
    plain = HungarianMatcher()
    assert torch.equal(HungarianMatcher(cost_slot=0.5).cost_matrix(
        outputs["pred_logits"][0], outputs["pred_masks"][0], outputs["pred_boxes"][0], target),
        plain.cost_matrix(outputs["pred_logits"][0], outputs["pred_masks"][0], outputs["pred_boxes"][0], target)
        + 0.5 * torch.arange(5.0)[:, None])
    # a clearly better slot still wins against the prior
    outputs["pred_masks"][0, 4] = torch.where(resize_masks(target["masks"], (8, 8))[0] > 0.5, 9.0, -9.0)
    outputs["pred_boxes"][0, 4] = boxes_from_masks(target["masks"])[0]
    rows, cols = HungarianMatcher(cost_slot=0.5)(outputs, [target])[0]
    assert dict(zip(cols.tolist(), rows.tolist()))[0] == 4


def test_each_config_key_sets_its_own_matching_cost_and_loss_weight():
    """loss.cls / mask / dice / bbox / giou / focal_* (all different) reach the matcher's cost
    and the criterion's total through the right key."""
    from avseg.config import load_config
    from avseg.models.build import build_criterion

    weights = {"cls": 1.5, "mask": 3.0, "dice": 7.0, "bbox": 0.5, "giou": 4.0}
    overrides = [f"loss.{k}={v}" for k, v in weights.items()]
    config = load_config("configs/cpu/qsd_r18_synth_avss.yaml",
                         [*overrides, "loss.focal_alpha=0.4", "loss.focal_gamma=1.0", "loss.audio_tagging=0",
                          "model.extras.tag_gating=false", "model.num_classes=3", "loss.lambda_vq=0.7", "loss.beta=0.3"])
    criterion = build_criterion(config)
    outputs, target = _outputs(1), _target(3)
    cost = criterion.matcher.cost_matrix(
        outputs["pred_logits"][0], outputs["pred_masks"][0], outputs["pred_boxes"][0], target
    )
    boxes = boxes_from_masks(target["masks"])
    for k, n in itertools.product(range(4), range(3)):
        expected = _pair_cost(
            None, outputs["pred_logits"][0, k], outputs["pred_masks"][0, k], outputs["pred_boxes"][0, k],
            int(target["labels"][n]), target["masks"][n], boxes[n], w=tuple(weights.values()), alpha=0.4, gamma=1.0,
        )
        assert torch.allclose(cost[k, n], expected, atol=1e-4), (k, n)
    vq = {"codebook_loss": torch.tensor(1.0), "commitment_loss": torch.tensor(2.0)}
    losses = criterion({**outputs, "vq": vq}, [target])
    names = {"cls": "loss_ce", "mask": "loss_mask", "dice": "loss_dice", "bbox": "loss_bbox", "giou": "loss_giou"}
    total = sum(w * losses[names[k]] for k, w in weights.items()) + 0.7 * (1.0 + 0.3 * 2.0)
    assert float(losses["loss_total"]) == pytest.approx(float(total), rel=1e-5)
