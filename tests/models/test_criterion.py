import pytest
import torch

from avseg.models.criterion import SetCriterion
from avseg.models.matcher import HungarianMatcher
from avseg.structures import boxes_from_masks

NUM_CLASSES = 3
K = 4
SIZE = 8


def _targets() -> list[dict]:
    """Three frames: two objects, one object, none."""
    first = torch.zeros(2, SIZE, SIZE, dtype=torch.bool)
    first[0, 1:4, 1:5] = True
    first[1, 5:8, 3:8] = True
    second = torch.zeros(1, SIZE, SIZE, dtype=torch.bool)
    second[0, 2:6, 2:6] = True
    empty = torch.zeros(0, SIZE, SIZE, dtype=torch.bool)
    return [
        {"labels": torch.tensor([2, 3]), "masks": first},
        {"labels": torch.tensor([1]), "masks": second},
        {"labels": torch.zeros(0, dtype=torch.int64), "masks": empty},
    ]


def _perfect(targets: list[dict], slots=((2, 0), (1,), ())) -> dict:
    """Predictions that put target j of frame f on prediction slots[f][j]."""
    frames = len(targets)
    logits = torch.full((frames, K, NUM_CLASSES), -20.0)
    masks = torch.full((frames, K, SIZE, SIZE), -20.0)
    boxes = torch.full((frames, K, 4), 0.5)
    for f, target in enumerate(targets):
        target_boxes = boxes_from_masks(target["masks"])
        for j, k in enumerate(slots[f]):
            logits[f, k, target["labels"][j] - 1] = 20.0
            masks[f, k][target["masks"][j]] = 20.0
            boxes[f, k] = target_boxes[j]
    return {"pred_logits": logits, "pred_masks": masks, "pred_boxes": boxes}


def _criterion(**kwargs) -> SetCriterion:
    return SetCriterion(NUM_CLASSES, HungarianMatcher(), **kwargs)


def test_perfect_prediction_costs_almost_nothing():
    targets = _targets()
    losses = _criterion()(_perfect(targets), targets)
    for key in ("loss_ce", "loss_mask", "loss_dice", "loss_bbox", "loss_giou", "loss_total"):
        assert float(losses[key]) < 1e-3, key


def test_wrong_predictions_cost_more():
    targets = _targets()
    criterion = _criterion()
    perfect = criterion(_perfect(targets), targets)
    wrong_class = _perfect(targets)
    wrong_class["pred_logits"] = wrong_class["pred_logits"].roll(1, dims=-1)
    shifted = _perfect(targets)
    shifted["pred_masks"] = shifted["pred_masks"].roll(3, dims=-1)
    shifted["pred_boxes"] = shifted["pred_boxes"].flip(-1)
    losses_class, losses_shift = criterion(wrong_class, targets), criterion(shifted, targets)
    assert float(losses_class["loss_ce"]) > 1.0 + float(perfect["loss_ce"])
    for key in ("loss_mask", "loss_dice", "loss_bbox", "loss_giou"):
        assert float(losses_shift[key]) > 0.1 + float(perfect[key]), key
    assert float(losses_class["loss_total"]) > 1.0 and float(losses_shift["loss_total"]) > 1.0


def test_permuted_slots_are_rematched():
    targets = _targets()
    criterion = _criterion()
    permuted = criterion(_perfect(targets, slots=((0, 3), (2,), ())), targets)
    assert float(permuted["loss_total"]) < 1e-3


def test_aux_outputs_are_matched_and_weighted_like_the_last_layer():
    targets = _targets()
    good, bad = _perfect(targets), _perfect(targets)
    bad["pred_masks"] = -bad["pred_masks"]
    outputs = {**good, "aux_outputs": [bad, _perfect(targets)]}
    criterion = _criterion()
    losses = criterion(outputs, targets)
    single = criterion(bad, targets)
    for key in ("loss_ce", "loss_mask", "loss_dice", "loss_bbox", "loss_giou"):
        assert f"{key}_0" in losses and f"{key}_1" in losses
        assert torch.allclose(losses[f"{key}_0"], single[key])
    expected = sum(criterion.weights[k] * single[k] for k in criterion.weights)
    assert torch.allclose(losses["loss_total"], expected, rtol=1e-4, atol=1e-3)
    assert float(losses["loss_mask_0"]) > 1.0 and float(losses["loss_mask_1"]) < 1e-3


def test_valid_mask_excludes_frames():
    targets = _targets()
    criterion = _criterion()
    outputs = _perfect(targets)
    outputs["pred_masks"][1] = -outputs["pred_masks"][1]  # frame 1 is badly predicted
    outputs["pred_logits"][2, 0, 0] = 20.0  # frame 2 has a false positive
    everything = criterion(outputs, targets)
    valid = torch.tensor([True, False, False])
    only_first = criterion(outputs, targets, valid=valid)
    assert float(everything["loss_total"]) > 1.0
    assert float(only_first["loss_total"]) < 1e-3
    none = criterion(outputs, targets, valid=torch.zeros(3, dtype=torch.bool))
    assert float(none["loss_total"]) == 0.0


def test_objects_normalise_and_gradients_flow():
    targets = _targets()
    outputs = {k: v.clone().requires_grad_(True) for k, v in _perfect(targets).items()}
    losses = _criterion()({**outputs, "pred_masks": outputs["pred_masks"] * 0.0}, targets)
    # zero-logit masks: BCE log(2) per pixel for each of the 3 objects, averaged over 3 objects
    assert abs(float(losses["loss_mask"].detach()) - torch.log(torch.tensor(2.0)).item()) < 1e-5
    losses["loss_total"].backward()
    assert all(v.grad is not None for v in outputs.values())


def test_vq_losses_enter_the_total():
    targets = _targets()
    criterion = _criterion(lambda_vq=2.0, beta=0.5)
    outputs = _perfect(targets)
    base = criterion(outputs, targets)
    vq = {
        "codebook_loss": torch.tensor(1.0),
        "commitment_loss": torch.tensor(2.0),
        "local_commitment_loss": torch.tensor(4.0),
        "perplexity": torch.tensor(50.0),
    }
    losses = criterion({**outputs, "vq": vq}, targets)
    assert float(losses["loss_vq"]) == pytest.approx(1.0 + 0.5 * (2.0 + 4.0))
    assert float(losses["loss_total"] - base["loss_total"]) == pytest.approx(2.0 * 4.0, rel=1e-5)
    assert float(base["loss_vq"]) == 0.0


def test_unknown_weight_is_rejected():
    with pytest.raises(ValueError, match="loss_cls"):
        _criterion(weights={"loss_cls": 1.0})


def test_targets_are_downsampled_to_the_prediction_size():
    targets = _targets()
    outputs = _perfect(targets)
    upsampled = [
        {**t, "masks": t["masks"].repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)}
        for t in targets
    ]
    losses = _criterion()(outputs, upsampled)
    assert float(losses["loss_total"]) < 1e-3
    half = [{**t, "masks": t["masks"][:, ::2, ::2]} for t in targets]
    assert float(_criterion()(outputs, half)["loss_mask"]) > 0.1


def test_audio_tagging_loss_scores_each_valid_frames_class_set():
    targets = _targets()
    outputs = _perfect(targets)
    # Frame 0 sounds classes 2 and 3 (columns 1, 2), frame 1 class 1 (column 0), frame 2 nothing.
    right = torch.tensor([[-9.0, 9.0, 9.0], [9.0, -9.0, -9.0], [-9.0, -9.0, -9.0]])
    criterion = _criterion(audio_tagging=3.0)
    base = _criterion()(outputs, targets)
    good = criterion({**outputs, "audio_tag_logits": right}, targets)
    bad = criterion({**outputs, "audio_tag_logits": -right}, targets)
    expected = torch.nn.functional.softplus(torch.tensor(-9.0)).item()  # BCE of a right logit of 9
    assert float(good["loss_audio_tag"]) == pytest.approx(expected, rel=1e-2)
    assert float(bad["loss_audio_tag"]) == pytest.approx(9.0 + expected, rel=1e-4)
    assert float(good["loss_total"] - base["loss_total"]) == pytest.approx(3.0 * expected, rel=1e-2)
    # Invalid frames are left out: flipping frame 2's tags changes nothing when it is not valid.
    flipped = right.clone()
    flipped[2] = 9.0
    valid = torch.tensor([True, True, False])
    assert float(criterion({**outputs, "audio_tag_logits": flipped}, targets, valid=valid)["loss_audio_tag"]) == \
        pytest.approx(float(criterion({**outputs, "audio_tag_logits": right}, targets, valid=valid)["loss_audio_tag"]))
    assert "loss_audio_tag" not in base


def test_audio_tagging_without_the_head_is_an_error():
    targets = _targets()
    with pytest.raises(ValueError, match="audio-tagging head"):
        _criterion(audio_tagging=1.0)(_perfect(targets), targets)
