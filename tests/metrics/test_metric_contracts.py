"""What the metrics promise beyond their headline numbers: every result key, bad input named,
state that merges and counts exactly. Expected values come from loops written out here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avseg.metrics.avss import AVSSMetric
from avseg.metrics.cavp import CAVPMetric, confusion_scores

C = 4


def _frames(seed: int, n: int = 6, size: int = 8, classes: int = C):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randint(0, classes, (n, size, size), generator=g)
    target = torch.randint(0, classes, (n, size, size), generator=g)
    target[0] = 0  # a frame with background only
    return pred, target


def _avss_by_hand(pred, target, present, classes=C):
    """Per-class IoU / F summed over frames where the class appears, as the reference loop."""
    sums = {k: np.zeros(classes) for k in ("iou", "f", "n", "iou_p", "f_p", "n_p")}
    for p, t, real in zip(pred.numpy(), target.numpy(), present.tolist()):
        for c in range(classes):
            inter = np.sum((p == c) & (t == c))
            predicted, labelled = np.sum(p == c), np.sum(t == c)
            union = predicted + labelled - inter
            if union == 0:
                continue
            precision = inter / predicted if predicted else 0.0
            recall = inter / labelled if labelled else 0.0
            f = 1.3 * precision * recall / (0.3 * precision + recall) if precision + recall else 0.0
            for suffix in ("", "_p") if real else ("",):
                sums["iou" + suffix][c] += inter / union
                sums["f" + suffix][c] += f
                sums["n" + suffix][c] += 1

    def per_class(name, count):
        return np.where(sums[count] > 0, sums[name] / np.maximum(sums[count], 1), 0.0)

    return {k: per_class(k, "n" + ("_p" if k.endswith("_p") else "")) for k in ("iou", "f", "iou_p", "f_p")}, sums


def test_avss_every_result_key_from_the_reference_loop():
    pred, target = _frames(0)
    present = torch.tensor([True, True, True, True, False, False])
    metric = AVSSMetric(C)
    metric.update(pred[:4], target[:4], frame_present=present[:4])
    metric.update(pred[4:], target[4:], frame_present=present[4:])
    result = metric.compute()
    hand, sums = _avss_by_hand(pred, target, present)
    expected = {
        "miou": hand["iou"].mean(), "f": hand["f"].mean(),
        "miou_no_bg": hand["iou"][1:].mean(), "f_no_bg": hand["f"][1:].mean(),
        "miou_no_bg_official": hand["iou"][:-1].mean(), "f_no_bg_official": hand["f"][:-1].mean(),
        "miou_present_only": hand["iou_p"].mean(), "f_present_only": hand["f_p"].mean(),
        "miou_present_only_no_bg": hand["iou_p"][1:].mean(), "f_present_only_no_bg": hand["f_p"][1:].mean(),
    }
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key
    assert (result["num_frames"], result["num_present_frames"], result["num_classes"]) == (6, 4, C)
    assert result["num_classes_seen"] == int((sums["n"] > 0).sum())
    per_class = result["per_class"]
    np.testing.assert_allclose(per_class["iou"], hand["iou"], atol=1e-12)
    np.testing.assert_allclose(per_class["f"], hand["f"], atol=1e-12)
    np.testing.assert_allclose(per_class["iou_present_only"], hand["iou_p"], atol=1e-12)
    np.testing.assert_allclose(per_class["f_present_only"], hand["f_p"], atol=1e-12)
    assert per_class["frames"] == sums["n"].astype(int).tolist()
    assert per_class["frames_present_only"] == sums["n_p"].astype(int).tolist()


def test_avss_merge_adds_the_frames_of_both_parts():
    pred, target = _frames(1)
    present = torch.tensor([True, False, True, True, False, True])
    whole, first, second = AVSSMetric(C), AVSSMetric(C), AVSSMetric(C)
    whole.update(pred, target, frame_present=present)
    first.update(pred[:2], target[:2], frame_present=present[:2])
    second.update(pred[2:], target[2:], frame_present=present[2:])
    first.merge(second.state())
    merged, expected = first.compute(), whole.compute()
    assert (merged["num_frames"], merged["num_present_frames"]) == (6, 4)
    for key in ("miou", "f", "miou_present_only", "f_present_only"):
        assert merged[key] == pytest.approx(expected[key], abs=1e-12)
    with pytest.raises(ValueError, match="different num_classes"):
        first.merge(AVSSMetric(C + 1).state())


def test_avss_label_past_the_classes_counts_as_predicted_only():
    """A label >= C is not labelled, but the prediction on that pixel still counts as predicted."""
    pred = torch.ones(1, 2, 2, dtype=torch.long)
    target = torch.tensor([[[1, 1], [C, C]]])
    metric = AVSSMetric(C)
    metric.update(pred, target)
    result = metric.compute()
    assert result["per_class"]["iou"][1] == pytest.approx(2 / 4)  # inter 2, predicted 4, labelled 2
    assert result["per_class"]["frames"] == [0, 1, 0, 0]


def test_avss_two_classes_is_the_smallest_metric():
    metric = AVSSMetric(2)
    metric.update(torch.tensor([[[0, 1]]]), torch.tensor([[[0, 1]]]))
    assert metric.compute()["miou"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2"):
        AVSSMetric(1)


@pytest.mark.parametrize("metric_class", [AVSSMetric, CAVPMetric])
def test_bad_input_is_named(metric_class):
    metric = metric_class(C)
    with pytest.raises(RuntimeError, match=r"compute\(\) before any"):
        metric.compute()
    with pytest.raises(ValueError, match=rf"logits have 3 channels, the metric {C} classes"):
        metric.update(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=rf"ids must lie in \[0, {C}\), got 0\.\.{C}"):  # too large only
        metric.update(torch.tensor([[[0, C]]]), torch.zeros(1, 1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"ids must lie in .*got -1\.\.1"):  # negative only
        metric.update(torch.tensor([[[-1, 1]]]), torch.zeros(1, 1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"prediction \(1, 1, 2\) and target \(1, 2, 2\) differ in shape"):
        metric.update(torch.zeros(1, 1, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))
    metric.update(torch.tensor([[[C - 1, 0]]]), torch.tensor([[[C - 1, 0]]]))  # C - 1 is a valid id
    metric.sync()
    with pytest.raises(RuntimeError, match=r"update\(\) after sync\(\): call reset\(\) first"):
        metric.update(torch.zeros(1, 1, 2, dtype=torch.long), torch.zeros(1, 1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2"):
        metric_class(1)


def test_cavp_every_result_key_from_the_confusion_matrix():
    pred, target = _frames(2)
    target[1, 0, 0] = 255  # ignored
    metric = CAVPMetric(C)
    metric.update(pred, target)
    keep = target != 255
    confusion = np.zeros((C, C))
    for t, p in zip(target[keep].tolist(), pred[keep].tolist()):
        confusion[t, p] += 1
    tp = np.diag(confusion)
    fp, fn = confusion.sum(0) - tp, confusion.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * tp / (2 * tp + fp + fn)
        f03 = 1.3 * tp / (1.3 * tp + 0.3 * fn + fp)
        fdr = fp / (fp + tp)
    iou = tp / (tp + fp + fn)
    result = metric.compute()
    assert result["miou"] == pytest.approx(iou.mean(), abs=1e-12)
    assert result["f1"] == pytest.approx(np.nanmean(f1), abs=1e-12)
    assert result["f03"] == pytest.approx(np.nanmean(f03), abs=1e-12)
    assert result["fdr"] == pytest.approx(np.nanmean(fdr), abs=1e-12)
    assert result["pixel_acc"] == pytest.approx(tp.sum() / confusion.sum(), abs=1e-12)
    assert result["num_pixels"] == int(keep.sum()) and result["num_classes_seen"] == C
    per_class = result["per_class"]
    np.testing.assert_allclose(per_class["iou"], iou, atol=1e-12)
    np.testing.assert_allclose(per_class["f1"], f1, atol=1e-12)
    np.testing.assert_allclose(per_class["f03"], f03, atol=1e-12)
    np.testing.assert_allclose(per_class["fdr"], fdr, atol=1e-12)
    assert (per_class["tp"], per_class["fp"], per_class["fn"]) == (tp.tolist(), fp.tolist(), fn.tolist())


def test_cavp_unseen_classes_and_frames_without_labels():
    # class 3 never appears: its IoU (0) counts in miou, its F1 / FDR (undefined) are left out
    confusion = torch.tensor([[5, 1, 0, 0], [2, 3, 0, 0], [0, 0, 4, 0], [0, 0, 0, 0]])
    scores = confusion_scores(confusion)
    assert scores["num_classes_seen"] == 3
    assert scores["miou_seen_classes"] == pytest.approx((5 / 8 + 3 / 6 + 1.0) / 3)
    assert scores["miou"] == pytest.approx((5 / 8 + 3 / 6 + 1.0) / 4)
    assert scores["f1"] == pytest.approx((10 / 13 + 6 / 9 + 1.0) / 3)
    empty = confusion_scores(torch.zeros(2, 2, dtype=torch.long))
    assert np.isnan(empty["miou_seen_classes"]) and empty["num_classes_seen"] == 0
    # label_present drops the frames without ground truth; the target's bad ids are named
    metric = CAVPMetric(C)
    pred = torch.tensor([[[1, 1]], [[2, 2]]])
    metric.update(pred, torch.tensor([[[1, 1]], [[0, 0]]]), label_present=torch.tensor([True, False]))
    assert metric.compute()["per_class"]["tp"] == [0, 2, 0, 0] and metric.compute()["num_pixels"] == 2
    with pytest.raises(ValueError, match=rf"target holds class id {C} >= num_classes={C}"):
        metric.update(pred, torch.full((2, 1, 2), C))
    other = CAVPMetric(C)
    other.update(pred, torch.tensor([[[1, 1]], [[2, 0]]]))
    metric.merge(other.state())
    assert metric.compute()["per_class"]["tp"] == [0, 4, 1, 0]
    with pytest.raises(ValueError, match="different num_classes"):
        metric.merge(CAVPMetric(C + 1).state())


# ----------------------------------------------------------------------------- AVSBench-Object J / F


def test_avsbench_probabilities_are_used_as_they_are():
    """With probabilities=True nothing is squashed again: 0.4 is background, 0.6 foreground, and an
    exact 0.5 is background (the reference thresholds with > 0.5)."""
    from avseg.metrics.avsbench import AVSBenchMetric, avsbench_f, avsbench_j, frame_ious

    prob = torch.tensor([[[0.4, 0.6], [0.5, 0.9]]])
    truth = torch.tensor([[[0, 1], [1, 1]]])
    # predicted {0.6, 0.9} vs truth {3 pixels}: IoU 2/3; a sigmoid would make every pixel > 0.5 (IoU 3/4)
    assert float(frame_ious(prob, truth, probabilities=True)[0]) == pytest.approx(2 / 3, abs=1e-6)
    assert avsbench_j(prob, truth, probabilities=True) == pytest.approx(2 / 3, abs=1e-6)
    # F: at thresholds <= 0.4 every pixel (P 3/4, R 1); in (0.4, 0.5]: 3 pixels, all true (P 1, R 1)
    assert avsbench_f(prob, truth, probabilities=True) == pytest.approx(1.0, abs=1e-9)
    metric = AVSBenchMetric(1, 1, probabilities=True)
    metric.update(prob, truth)
    assert metric.compute()["j"] == pytest.approx(2 / 3, abs=1e-6) and metric.compute()["f"] == pytest.approx(1.0)
    # integer 0 / 1 maps are compared as floats (not thresholded as integers)
    hard = torch.tensor([[[0, 1], [1, 1]]])
    assert avsbench_f(hard, truth, probabilities=True) == pytest.approx(avsbench_f(hard.float(), truth, probabilities=True))
    assert avsbench_f(hard, truth, probabilities=True) == pytest.approx(1.0)


def test_avsbench_thresholds_and_bad_input():
    from avseg.metrics.avsbench import AVSBenchMetric, reference_thresholds

    thresholds = reference_thresholds()
    assert thresholds.dtype == torch.float32 and thresholds.numel() == 255
    assert float(thresholds[0]) == 0.0 and float(thresholds[-1]) == 1.0  # 1 - 1e-10 rounds to 1 in float32
    for frames, clips in ((0, 4), (5, 0)):
        with pytest.raises(ValueError, match="frames_per_clip and clips_per_batch must be positive"):
            AVSBenchMetric(frames, clips)
    metric = AVSBenchMetric(1, 1)  # the smallest grouping is allowed
    with pytest.raises(ValueError, match=r"logits must be \[N, H, W\] .*got shape \(2, 2\)"):
        metric.update(torch.zeros(2, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"target must be \[N, H, W\] .*got shape \(4,\)"):
        metric.update(torch.zeros(1, 2, 2), torch.zeros(4))
    with pytest.raises(ValueError, match=r"prediction \(1, 2, 2\) and target \(1, 2, 3\) differ in shape"):
        metric.update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 3))
    metric.update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2))
    metric.sync()
    with pytest.raises(RuntimeError, match=r"update\(\) after sync\(\): call reset\(\) first"):
        metric.update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2))


def test_avsbench_empty_state_of_a_rank_without_clips():
    """A rank that saw no clip (DDP with more ranks than clips) sends typed empty statistics."""
    from avseg.metrics.avsbench import AVSBenchMetric

    state = AVSBenchMetric(5).state()
    assert state["ious"].shape == (0,) and state["ious"].dtype == torch.float64
    assert state["curves"].shape == (0, 255) and state["curves"].dtype == torch.float64
    assert state["empty"].shape == (0,) and state["empty"].dtype == torch.bool and state["clip_index"] is None
    full = AVSBenchMetric(1, 1)
    full.update(torch.tensor([[[0.2, 3.0]]]), torch.tensor([[[0, 1]]]), clip_index=[0])
    before = full.compute()
    full.merge(AVSBenchMetric(1, 1).state())
    assert full.compute() == before
    with pytest.raises(ValueError, match="clip_index has 2 entries for 1 clips"):
        AVSBenchMetric(1, 1).update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), clip_index=[0, 1])
    mixed = AVSBenchMetric(1, 1)
    mixed.update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), clip_index=[0])
    mixed.update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="clip_index was given to some update"):
        mixed.compute()
