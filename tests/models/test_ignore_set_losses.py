"""QSD's set losses leave ignored pixels (label 255) out of the mask BCE and Dice, in the
matching cost and in the loss; frames without 255 keep the plain terms bit for bit."""

import math

import pytest
import torch

from avseg.data.targets import masks_to_targets
from avseg.models.criterion import SetCriterion
from avseg.models.matcher import HungarianMatcher

NUM_CLASSES = 3
K = 4


def _semantic() -> torch.Tensor:
    """16x16 labels: class 2 in rows 2-7, class 3 in rows 10-13, columns 9-15 ignored (odd
    edge: at 8x8 the cells of column 4 are half ignored, columns 5-7 wholly)."""
    semantic = torch.zeros(16, 16, dtype=torch.int64)
    semantic[2:8, 1:12] = 2
    semantic[10:14, 3:7] = 3
    semantic[:, 9:] = 255
    return semantic


def _outputs(seed: int = 0, size: int = 8) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        "pred_logits": torch.randn(1, K, NUM_CLASSES, generator=generator),
        "pred_masks": torch.randn(1, K, size, size, generator=generator) * 3,
    }


def _loop_terms(logits: torch.Tensor, semantic: torch.Tensor, label: int) -> tuple[float, float]:
    """(BCE, Dice) of one prediction `[h, w]` against one class of a label map `[H, W]`, written
    out pixel by pixel: each full-resolution pixel takes the logit of the prediction cell it lies
    in; ignored pixels are skipped; BCE is the mean over the kept pixels; Dice counts areas in
    prediction cells (pixel sums / pixels per cell) with +1 smoothing."""
    h, w = logits.shape
    height, width = semantic.shape
    per_cell = (height // h) * (width // w)
    bce_sum, kept, inter, pred_area, target_area = 0.0, 0, 0.0, 0.0, 0.0
    for y in range(height):
        for x in range(width):
            value = int(semantic[y, x])
            if value == 255:
                continue
            z = float(logits[y * h // height, x * w // width])
            target = 1.0 if value == label else 0.0
            bce_sum += target * math.log1p(math.exp(-z)) + (1 - target) * math.log1p(math.exp(z))
            kept += 1
            p = 1 / (1 + math.exp(-z))
            inter += p * target
            pred_area += p
            target_area += target
    dice = 1 - (2 * inter / per_cell + 1) / (pred_area / per_cell + target_area / per_cell + 1)
    return bce_sum / kept, dice


def _only_mask(weight_bce: float, weight_dice: float) -> HungarianMatcher:
    return HungarianMatcher(cost_class=0.0, cost_mask=weight_bce, cost_dice=weight_dice, cost_bbox=0.0, cost_giou=0.0)


def test_masked_bce_and_dice_equal_a_pixel_loop_in_the_cost_and_the_loss():
    semantic = _semantic()
    target = masks_to_targets(semantic, class_agnostic=False, min_area=1)
    assert target["labels"].tolist() == [2, 3] and bool(target["ignore"][0, 9])
    outputs = _outputs()
    masks = outputs["pred_masks"][0]
    bce_cost = _only_mask(1.0, 0.0).cost_matrix(outputs["pred_logits"][0], masks, None, target)
    dice_cost = _only_mask(0.0, 1.0).cost_matrix(outputs["pred_logits"][0], masks, None, target)
    expected = {(k, n): _loop_terms(masks[k], semantic, label)
                for k in range(K) for n, label in enumerate((2, 3))}
    for (k, n), (bce, dice) in expected.items():
        assert float(bce_cost[k, n]) == pytest.approx(bce, rel=1e-5), (k, n)
        assert float(dice_cost[k, n]) == pytest.approx(dice, rel=1e-5), (k, n)
    criterion = SetCriterion(NUM_CLASSES, HungarianMatcher())
    losses = criterion(outputs, [target])
    rows, cols = criterion.matcher(outputs, [target])[0]
    pairs = [expected[int(k), int(n)] for k, n in zip(rows, cols)]
    assert float(losses["loss_mask"]) == pytest.approx(sum(b for b, _ in pairs) / 2, rel=1e-5)
    assert float(losses["loss_dice"]) == pytest.approx(sum(d for _, d in pairs) / 2, rel=1e-5)


def test_predictions_on_ignored_pixels_change_neither_the_matching_nor_the_loss():
    semantic = torch.zeros(8, 8, dtype=torch.int64)
    semantic[1:5, 1:4] = 2
    semantic[:, 6:] = 255
    target = masks_to_targets(semantic, class_agnostic=False, min_area=1)
    logits = torch.full((1, K, NUM_CLASSES), -6.0)
    logits[0, 0, 1], logits[0, 2, 1] = 6.0, 5.0  # slot 0 is the better class guess
    masks = torch.full((1, K, 8, 8), -6.0)
    for slot in (0, 2):  # both slots draw the object
        masks[0, slot, 1:5, 1:4] = 6.0
    outputs = {"pred_logits": logits, "pred_masks": masks}
    criterion = SetCriterion(NUM_CLASSES, HungarianMatcher())
    before = criterion(outputs, [target])
    assert criterion.matcher(outputs, [target])[0][0].tolist() == [0]
    changed = masks.clone()
    changed[0, 0, :, 6:] = 9.0  # slot 0 now also "sees" the object on every ignored pixel
    changed[0, 2, :, 6:] = torch.linspace(-9, 9, 16).view(8, 2)
    after_outputs = {"pred_logits": logits, "pred_masks": changed}
    assert criterion.matcher(after_outputs, [target])[0][0].tolist() == [0]
    after = criterion(after_outputs, [target])
    for key in ("loss_ce", "loss_mask", "loss_dice", "loss_total"):
        assert float(after[key]) == pytest.approx(float(before[key]), rel=1e-6, abs=1e-7), key
    # the same change on pixels labelled background costs more (and moves the match)
    semantic[:, 6:] = 0
    plain = masks_to_targets(semantic, class_agnostic=False, min_area=1)
    assert criterion.matcher(after_outputs, [plain])[0][0].tolist() == [2]
    assert float(criterion(after_outputs, [plain])["loss_mask"]) > float(before["loss_mask"]) + 0.5


def test_frames_without_ignored_pixels_give_bit_identical_losses():
    semantic = _semantic()
    semantic[semantic == 255] = 0
    target = masks_to_targets(semantic, class_agnostic=False, min_area=1)
    assert not bool(target["ignore"].any())
    without_key = {k: v for k, v in target.items() if k != "ignore"}  # the targets as they were
    criterion = SetCriterion(NUM_CLASSES, HungarianMatcher())
    two = [_outputs(3), _outputs(4), _outputs(7), _outputs(8)]
    boxes = torch.rand(2, K, 4, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.25
    outputs = {k: torch.cat([two[0][k], two[1][k]]) for k in two[0]}
    outputs["pred_boxes"] = boxes
    outputs["aux_outputs"] = [{**{k: torch.cat([two[2][k], two[3][k]]) for k in two[0]}, "pred_boxes": boxes}]
    plain = criterion(outputs, [without_key, without_key])
    for key, value in criterion(outputs, [target, target]).items():
        assert torch.equal(value, plain[key]), key
    matcher = HungarianMatcher()
    for seed in range(4):  # the matching costs too, at the labels' size and at half of it
        for size in (16, 8):
            extra = _outputs(10 + seed, size=size)
            args = (extra["pred_logits"][0], extra["pred_masks"][0], None)
            assert torch.equal(matcher.cost_matrix(*args, target), matcher.cost_matrix(*args, without_key))
    # the pixel loop without ignored pixels gives the plain terms too
    bce_cost = _only_mask(1.0, 0.0).cost_matrix(outputs["pred_logits"][0], outputs["pred_masks"][0], None, target)
    assert float(bce_cost[1, 0]) == pytest.approx(_loop_terms(outputs["pred_masks"][0, 1], semantic, 2)[0], rel=1e-5)


def test_a_batch_mixing_frames_with_and_without_ignored_pixels():
    """Each frame's matched terms are its own: the plain frame as alone, the other masked."""
    ignored = _semantic()
    clean = ignored.clone()
    clean[clean == 255] = 0
    targets = [masks_to_targets(s, class_agnostic=False, min_area=1) for s in (clean, ignored)]
    first, second = _outputs(5), _outputs(6)
    outputs = {k: torch.cat([first[k], second[k]]) for k in first}
    criterion = SetCriterion(NUM_CLASSES, HungarianMatcher())
    losses = criterion(outputs, targets)
    expected_bce = 0.0
    for frame, semantic in enumerate((clean, ignored)):
        rows, cols = criterion.matcher({k: v[frame:frame + 1] for k, v in outputs.items()}, [targets[frame]])[0]
        for k, n in zip(rows.tolist(), cols.tolist()):
            expected_bce += _loop_terms(outputs["pred_masks"][frame, k], semantic, (2, 3)[n])[0]
    assert float(losses["loss_mask"]) == pytest.approx(expected_bce / 4, rel=1e-5)
