"""QSD's losses and matching costs against hand computations of their documented formulas.

Each expected value is written out here from the formulas in criterion.py / matcher.py's module
docstrings (focal loss, per-pixel BCE, Dice, L1, GIoU, normalisation by the batch's objects,
ignored pixels), looping over the matched pairs, never by calling the code under test on the
same inputs. Written from the models' mutation survivors (docs/testing.md section 4).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from avseg.models.criterion import SetCriterion
from avseg.models.matcher import HungarianMatcher, keep_weights, resize_masks

C, K = 3, 3


def _frame(labels: list[int], boxes: list[tuple[slice, slice]], size: int = 4) -> dict:
    masks = torch.zeros(len(labels), size, size, dtype=torch.bool)
    for n, (rows, cols) in enumerate(boxes):
        masks[n, rows, cols] = True
    return {"labels": torch.tensor(labels, dtype=torch.int64), "masks": masks}


def _outputs(frames: int, size: int = 4, seed: int = 0, boxes: bool = True) -> dict:
    generator = torch.Generator().manual_seed(seed)
    outputs = {
        "pred_logits": torch.randn(frames, K, C, generator=generator) * 2,
        "pred_masks": torch.randn(frames, K, size, size, generator=generator) * 2,
    }
    if boxes:
        centre = 0.3 + 0.4 * torch.rand(frames, K, 2, generator=generator)
        extent = 0.2 + 0.3 * torch.rand(frames, K, 2, generator=generator)
        outputs["pred_boxes"] = torch.cat([centre, extent], dim=-1)
    return outputs


def _focal(logit: float, positive: bool, alpha: float = 0.25, gamma: float = 2.0) -> float:
    p = 1 / (1 + math.exp(-logit))
    p_t = p if positive else 1 - p
    alpha_t = alpha if positive else 1 - alpha
    return -alpha_t * (1 - p_t) ** gamma * math.log(p_t)


def _bce(logit: float, target: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def _box_from_mask(mask: torch.Tensor) -> tuple[float, float, float, float]:
    """(cx, cy, w, h) normalised by the image size, from the mask's pixel extents."""
    h, w = mask.shape
    ys, xs = torch.nonzero(mask, as_tuple=True)
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    return ((x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h)


def _giou(a, b) -> float:
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = a[2] * a[3] + b[2] * b[3] - inter
    hull = (max(ax1, bx1) - min(ax0, bx0)) * (max(ay1, by1) - min(ay0, by0))
    return inter / union - (hull - union) / hull


def _expected(outputs: dict, targets: list[dict], matches) -> dict[str, float]:
    """The five segmentation terms of one layer, by hand."""
    objects = max(sum(len(t["labels"]) for t in targets), 1)
    logits = outputs["pred_logits"].double()
    ce = 0.0
    positives = {(f, int(k), int(targets[f]["labels"][n]) - 1)
                 for f, (ks, ns) in enumerate(matches) for k, n in zip(ks, ns)}
    for f in range(logits.shape[0]):
        for k in range(K):
            for c in range(C):
                ce += _focal(float(logits[f, k, c]), (f, k, c) in positives)
    mask = dice = bbox = giou = 0.0
    for f, (ks, ns) in enumerate(matches):
        for k, n in zip(ks.tolist(), ns.tolist()):
            pred = outputs["pred_masks"][f, k].double()
            target = targets[f]["masks"][n].double()
            terms = [_bce(float(x), float(t)) for x, t in zip(pred.flatten(), target.flatten())]
            mask += sum(terms) / len(terms)
            prob = pred.sigmoid()
            dice += 1 - (2 * float((prob * target).sum()) + 1) / (float(prob.sum() + target.sum()) + 1)
            if "pred_boxes" in outputs:
                box = targets[f]["boxes"][n].tolist() if "boxes" in targets[f] else _box_from_mask(targets[f]["masks"][n])
                pred_box = outputs["pred_boxes"][f, k].tolist()
                bbox += sum(abs(p - t) for p, t in zip(pred_box, box))
                giou += 1 - _giou(pred_box, box)
    values = {"loss_ce": ce, "loss_mask": mask, "loss_dice": dice}
    if "pred_boxes" in outputs:
        values |= {"loss_bbox": bbox, "loss_giou": giou}
    return {key: value / objects for key, value in values.items()}


def _three_objects() -> list[dict]:
    return [_frame([2, 3], [(slice(0, 2), slice(0, 3)), (slice(2, 4), slice(1, 4))]),
            _frame([1], [(slice(1, 3), slice(1, 3))])]


def test_every_term_and_the_total_by_hand():
    """Focal (alpha 0.25, gamma 2), mean BCE, Dice, L1, 1 - GIoU, each / 3 objects; default weights."""
    targets = _three_objects()
    outputs = _outputs(2)
    vq = {"codebook_loss": torch.tensor(0.7), "commitment_loss": torch.tensor(0.4),
          "local_commitment_loss": torch.tensor(0.2)}
    criterion = SetCriterion(C, HungarianMatcher())
    losses = criterion({**outputs, "vq": vq}, targets)
    expected = _expected(outputs, targets, criterion.matcher(outputs, targets))
    for key, value in expected.items():
        assert float(losses[key]) == pytest.approx(value, rel=1e-5), key
    assert float(losses["loss_vq"]) == pytest.approx(0.7 + 0.25 * (0.4 + 0.2))  # beta = 0.25
    weights = {"loss_ce": 2, "loss_mask": 2, "loss_dice": 5, "loss_bbox": 5, "loss_giou": 2}
    total = sum(weights[k] * v for k, v in expected.items()) + 1.0 * float(losses["loss_vq"])  # lambda_vq = 1
    assert float(losses["loss_total"]) == pytest.approx(total, rel=1e-5)


def test_given_boxes_are_used_over_the_masks_extents():
    targets = _three_objects()
    targets[0]["boxes"] = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.4, 0.6, 0.3, 0.2]])
    targets[1]["boxes"] = torch.tensor([[0.45, 0.55, 0.25, 0.35]])
    outputs = _outputs(2, seed=3)
    matcher = HungarianMatcher(cost_class=0, cost_mask=0, cost_dice=0)  # boxes decide the match
    losses = SetCriterion(C, matcher)(outputs, targets)
    expected = _expected(outputs, targets, matcher(outputs, targets))
    assert float(losses["loss_bbox"]) == pytest.approx(expected["loss_bbox"], rel=1e-5)
    assert float(losses["loss_giou"]) == pytest.approx(expected["loss_giou"], rel=1e-5)


def test_one_object_and_no_object_normalise_by_one():
    one = [_frame([2], [(slice(0, 2), slice(0, 2))])]
    outputs = _outputs(1, seed=1, boxes=False)
    criterion = SetCriterion(C, HungarianMatcher())
    losses = criterion(outputs, one)
    expected = _expected(outputs, one, criterion.matcher(outputs, one))
    assert set(losses) == {"loss_ce", "loss_mask", "loss_dice", "loss_vq", "loss_total"}
    for key, value in expected.items():
        assert float(losses[key]) == pytest.approx(value, rel=1e-5), key
    silent = [_frame([], [])]
    losses = criterion(outputs, silent)
    # no object: every prediction is a focal negative, divided by max(0, 1) = 1
    negatives = sum(_focal(float(x), False) for x in outputs["pred_logits"].flatten())
    assert float(losses["loss_ce"]) == pytest.approx(negatives, rel=1e-5)
    assert float(losses["loss_mask"]) == 0.0 and float(losses["loss_dice"]) == 0.0


@pytest.mark.parametrize("boxes", [True, False])
def test_no_valid_frame_gives_zero_losses_that_still_reach_every_prediction(boxes):
    targets = _three_objects()
    outputs = {k: v.requires_grad_(True) for k, v in _outputs(2, boxes=boxes).items()}
    outputs["aux_outputs"] = [{k: v * 1.0 for k, v in outputs.items()}]
    losses = SetCriterion(C, HungarianMatcher())(outputs, targets, valid=torch.zeros(2, dtype=torch.bool))
    terms = ["loss_ce", "loss_mask", "loss_dice"] + (["loss_bbox", "loss_giou"] if boxes else [])
    assert set(losses) == {*terms, *(t + "_0" for t in terms), "loss_vq", "loss_total"}
    assert all(isinstance(v, torch.Tensor) and float(v.detach()) == 0.0 for v in losses.values())
    losses["loss_total"].backward()  # DDP needs every prediction in the graph
    for key in ("pred_logits", "pred_masks") + (("pred_boxes",) if boxes else ()):
        assert outputs[key].grad is not None and int(outputs[key].grad.count_nonzero()) == 0


def test_valid_frames_select_the_aux_layers_too():
    targets = _three_objects() + [_frame([3], [(slice(0, 4), slice(2, 4))])]
    outputs = _outputs(3, seed=5)
    outputs["aux_outputs"] = [_outputs(3, seed=6), _outputs(3, seed=7)]
    criterion = SetCriterion(C, HungarianMatcher())
    valid = torch.tensor([True, False, True])
    chosen = criterion(outputs, [targets[0], targets[1], targets[2]], valid=valid)
    keep = torch.tensor([0, 2])
    sliced = {k: v[keep] for k, v in outputs.items() if k != "aux_outputs"}
    sliced["aux_outputs"] = [{k: v[keep] for k, v in aux.items()} for aux in outputs["aux_outputs"]]
    direct = criterion(sliced, [targets[0], targets[2]])
    assert set(chosen) == set(direct) and "loss_dice_1" in chosen
    for key in direct:
        assert float(chosen[key]) == pytest.approx(float(direct[key]), rel=1e-6), key
    with pytest.raises(ValueError, match=r"^valid has 2 entries for 3 frames$"):
        criterion(outputs, [targets[0], targets[1], targets[2]], valid=torch.ones(2, dtype=torch.bool))


def test_vq_terms_missing_from_the_dict_count_as_zero():
    targets = _three_objects()
    outputs = _outputs(2)
    criterion = SetCriterion(C, HungarianMatcher(), beta=0.5)
    only_codebook = criterion({**outputs, "vq": {"codebook_loss": torch.tensor(0.8)}}, targets)
    assert float(only_codebook["loss_vq"]) == pytest.approx(0.8)
    only_commitment = criterion({**outputs, "vq": {"commitment_loss": torch.tensor(0.8)}}, targets)
    assert float(only_commitment["loss_vq"]) == pytest.approx(0.4)


def test_audio_tag_loss_of_one_valid_frame_and_of_none():
    targets = _three_objects()
    outputs = {k: v.requires_grad_(True) for k, v in _outputs(2).items()}
    tags = torch.tensor([[0.5, -1.0, 2.0], [-3.0, 0.25, 1.5]], requires_grad=True)
    criterion = SetCriterion(C, HungarianMatcher(), audio_tagging=1.0)
    one = criterion({**outputs, "audio_tag_logits": tags}, targets, valid=torch.tensor([False, True]))
    expected = sum(_bce(float(x), t) for x, t in zip(tags[1].tolist(), (1.0, 0.0, 0.0))) / 3  # frame 1: class 1
    assert float(one["loss_audio_tag"].detach()) == pytest.approx(expected, rel=1e-6)
    as_numbers = criterion({**outputs, "audio_tag_logits": tags}, targets, valid=torch.tensor([0, 1]))  # a 0/1 mask
    assert float(as_numbers["loss_audio_tag"].detach()) == pytest.approx(expected, rel=1e-6)
    none = criterion({**outputs, "audio_tag_logits": tags}, targets, valid=torch.zeros(2, dtype=torch.bool))
    assert float(none["loss_audio_tag"].detach()) == 0.0
    none["loss_total"].backward()
    assert int(outputs["pred_masks"].grad.count_nonzero()) == 0
    with pytest.raises(ValueError, match=r"^audio_tagging > 0 needs the model's audio-tagging head"):
        criterion(outputs, targets)


def _rank_targets(rank: int) -> list[dict]:
    return _three_objects() if rank == 0 else [_frame([1], [(slice(0, 2), slice(0, 4))]), _frame([], [])]


def _ddp_worker(rank: int, world: int, init_file: str, results: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        losses = SetCriterion(C, HungarianMatcher())(_outputs(2, seed=20 + rank), _rank_targets(rank))
        torch.save({k: v.detach() for k, v in losses.items()}, f"{results}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_ranks_normalise_by_the_mean_object_count(tmp_path):
    """DETR's rule: every rank divides by the objects of all ranks / world size (3 + 1) / 2 = 2."""
    results = str(tmp_path / "losses")
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), results), nprocs=2, join=True)
    for rank, own_objects in ((0, 3), (1, 1)):
        ranked = torch.load(f"{results}.{rank}", weights_only=True)
        alone = SetCriterion(C, HungarianMatcher())(_outputs(2, seed=20 + rank), _rank_targets(rank))
        for key in ("loss_ce", "loss_mask", "loss_dice", "loss_bbox", "loss_giou"):
            assert float(ranked[key]) == pytest.approx(float(alone[key]) * own_objects / 2, rel=1e-5), (rank, key)


# ----------------------------------------------------------------------------- ignored pixels


def _ignore_case():
    """Frame 0: two objects at 8 x 8 and an ignored band; frame 1: one object, nothing ignored.

    Predictions are 4 x 4: the targets and the kept-pixel map are area-downsampled to them.
    """
    first = _frame([2, 3], [(slice(0, 3), slice(0, 5)), (slice(5, 8), slice(2, 8))], size=8)
    ignore = torch.zeros(8, 8, dtype=torch.bool)
    ignore[3:5, :] = True  # rows 3, 4: between the two objects
    ignore[0, 6:8] = True
    first["ignore"] = ignore
    second = _frame([1], [(slice(1, 6), slice(1, 6))], size=8)
    second["ignore"] = torch.zeros(8, 8, dtype=torch.bool)  # an ignore map that ignores nothing
    return [first, second]


def test_keep_weights_are_the_kept_share_of_each_cell():
    first, second = _ignore_case()
    weights = keep_weights(first, (4, 4)).view(4, 4)
    kept = (~first["ignore"]).double()
    for i in range(4):
        for j in range(4):
            assert float(weights[i, j]) == pytest.approx(float(kept[2 * i: 2 * i + 2, 2 * j: 2 * j + 2].mean()))
    assert keep_weights(second, (4, 4)) is None and keep_weights({"labels": torch.ones(1)}, (4, 4)) is None
    with pytest.raises(ValueError, match=r"^a target's ignore map must be \[H, W\], got shape \(1, 8, 8\)$"):
        keep_weights({"ignore": first["ignore"][None]}, (4, 4))


def test_area_resize_of_masks():
    masks = torch.zeros(1, 4, 6, dtype=torch.bool)
    masks[0, :2, :3] = True
    small = resize_masks(masks, (2, 3))
    assert small.dtype == torch.float32 and small.tolist() == [[[1.0, 0.5, 0.0], [0.0, 0.0, 0.0]]]
    assert resize_masks(torch.zeros(0, 4, 6, dtype=torch.bool), (2, 3)).shape == (0, 2, 3)
    assert torch.equal(resize_masks(masks, (4, 6)), masks.float())


def test_focal_parameters_reach_the_class_loss():
    targets = _three_objects()
    outputs = _outputs(2, seed=4, boxes=False)
    criterion = SetCriterion(C, HungarianMatcher(), focal_alpha=0.4, focal_gamma=1.0)
    losses = criterion(outputs, targets)
    matches = criterion.matcher(outputs, targets)
    positives = {(f, int(k), int(targets[f]["labels"][n]) - 1)
                 for f, (ks, ns) in enumerate(matches) for k, n in zip(ks, ns)}
    expected = sum(_focal(float(outputs["pred_logits"][f, k, c]), (f, k, c) in positives, alpha=0.4, gamma=1.0)
                   for f in range(2) for k in range(K) for c in range(C)) / 3
    assert float(losses["loss_ce"]) == pytest.approx(expected, rel=1e-5)


def test_a_frame_with_one_kept_pixel_is_scored_on_that_pixel():
    """Kept share 1/4 of one cell: the mean is over that one pixel, not over max(1/4, 1) cells."""
    target = _frame([1], [(slice(0, 1), slice(0, 1))], size=8)
    target["ignore"] = torch.ones(8, 8, dtype=torch.bool)
    target["ignore"][0, 0] = False
    outputs = _outputs(1, seed=13, boxes=False)
    matcher = HungarianMatcher(cost_class=0.0, cost_mask=1.0, cost_dice=0.0)
    cost = matcher.cost_matrix(outputs["pred_logits"][0], outputs["pred_masks"][0], None, target)
    for k in range(K):
        assert float(cost[k, 0]) == pytest.approx(_bce(float(outputs["pred_masks"][0, k, 0, 0]), 1.0), rel=1e-5)
    criterion = SetCriterion(C, matcher)
    losses = criterion(outputs, [target])
    (k,), _ = criterion.matcher(outputs, [target])[0]
    assert float(losses["loss_mask"]) == pytest.approx(_bce(float(outputs["pred_masks"][0, int(k), 0, 0]), 1.0), rel=1e-5)


def test_an_ignore_map_of_bytes_reads_like_booleans():
    first, _ = _ignore_case()
    as_bytes = {**first, "ignore": first["ignore"].to(torch.uint8)}
    assert torch.equal(keep_weights(as_bytes, (4, 4)), keep_weights(first, (4, 4)))
