"""`avseg eval`: metrics.json and per_class.csv, damaged clips named and skipped, masks written."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from avseg.cli import main
from avseg.config import load_config
from avseg.data.build import build_dataset, class_names
from avseg.data.palette import rgb_to_ids
from avseg.data.synth import SynthConfig, generate
from avseg.engine.checkpoint import save_checkpoint
from avseg.engine.evaluate import evaluate, evaluation_loader, predict
from avseg.metrics import AVSBenchMetric
from avseg.metrics.avsbench import avsbench_f, avsbench_j
from avseg.models.build import build_model
from avseg.models.postprocess import foreground_probability, merge_masks

SMALL = ["data.image_size=32", "model.d_model=32", "model.n_heads=4", "model.ffn_dim=64", "model.encoder_layers=1",
         "model.qsd.asd_layers=1", "model.decoder_layers=2", "model.quantizer.codebook_size=16", "model.qsd.num_tokens=3",
         "model.num_classes=4", "data.num_workers=0", "data.batch_size=2"]


def _checkpoint(config, path):
    torch.manual_seed(0)
    model = build_model(config).eval()
    save_checkpoint(path, model=model, config=config, step=0, class_names=class_names(config))
    return model


def test_eval_skips_a_damaged_clip_names_it_and_writes_the_results(tmp_path, capsys):
    avss_root = tmp_path / "data"
    generate("avss", avss_root, SynthConfig(clips=8, image_size=32, num_classes=4, seed=5,
                                            avss_subsets=("v1m", "v2"), split=(0.5, 0.25, 0.25), workers=1))
    overrides = [f"data.root={avss_root}", f"output_dir={tmp_path / 'run'}", *SMALL]
    config = load_config("configs/cpu/qsd_r18_synth_avss.yaml", overrides)
    _checkpoint(config, tmp_path / "model.pt")
    dataset = build_dataset(config, "test")
    assert len(dataset) >= 2
    damaged = dataset.clips[1]
    damaged.frames[2].write_bytes(b"\x89PNG\r\n\x1a\n not an image any more")

    code = main(["eval", "configs/cpu/qsd_r18_synth_avss.yaml", *overrides, "--checkpoint", str(tmp_path / "model.pt"),
                 "--split", "test", "--out", str(tmp_path / "eval"), "--save-masks", str(tmp_path / "masks"),
                 "--overlays", str(tmp_path / "overlays")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert damaged.clip_id in captured.err and "frames/2" in captured.err  # named, with the file
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["skipped"] == [damaged.clip_id] and damaged.clip_id in metrics["skipped_errors"]
    assert metrics["num_clips"] == len(dataset) - 1 and metrics["main_metric"] == "miou"
    assert metrics["split"] == "test"
    with open(tmp_path / "eval" / "per_class.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["class_name"] for row in rows] == class_names(config) and "iou" in rows[0]
    # mIoU is the mean over every class (background included) of the per-class IoU in the table
    assert metrics["miou"] == pytest.approx(np.mean([float(row["iou"]) for row in rows]), abs=1e-6)
    assert metrics["num_frames"] == 10 * metrics["num_clips"]  # every slot scored, padded ones too
    # masks at the ground truth's relative paths, in the palette; none for the damaged clip
    good = dataset.clips[0]
    relative = good.masks[0].relative_to(avss_root)
    saved = np.asarray(Image.open(tmp_path / "masks" / relative).convert("RGB"))
    assert saved.shape == (32, 32, 3)
    ids, outside = rgb_to_ids(saved, 71)
    assert ids.max() < len(class_names(config))
    assert not (tmp_path / "masks" / damaged.masks[0].relative_to(avss_root)).exists()
    assert (tmp_path / "overlays" / good.clip_id / "0.png").is_file()


def test_foreground_probability_thresholds_like_the_merged_binary_mask():
    logits = torch.tensor([[[2.0, -1.0], [-3.0, -4.0], [0.0, 0.5]]])  # 1 frame, 3 tokens, 2 classes
    masks = torch.full((1, 3, 4, 4), -3.0)
    masks[0, 0, :2] = 3.0  # kept token (score 0.88): top half
    masks[0, 1] = 10.0  # dropped token (score 0.05): its mask never counts
    masks[0, 2, :, :1] = 0.2  # kept token (score 0.62): left column, probability 0.55
    prob = foreground_probability(logits, masks)
    assert prob.shape == (1, 4, 4)
    assert prob[0, 0, 3] == pytest.approx(float(torch.sigmoid(torch.tensor(3.0))))
    assert prob[0, 3, 0] == pytest.approx(float(torch.sigmoid(torch.tensor(0.2))))
    assert prob[0, 3, 3] == pytest.approx(float(torch.sigmoid(torch.tensor(-3.0))))
    merged = merge_masks(logits, masks, binary=True)
    assert torch.equal((prob > 0.5).long(), merged)
    assert foreground_probability(logits, masks, size=(8, 8)).shape == (1, 8, 8)
    binary = predict({"pred_logits": logits, "pred_masks": masks}, "binary", (4, 4))
    assert torch.equal(binary["ids"], merged)


def test_longest_side_scoring_cuts_the_padding_and_scores_at_the_label_size():
    from avseg.data.sample import Batch
    from avseg.engine.evaluate import TaskMetric, at_label_size

    native = torch.zeros(2, 6, 9, dtype=torch.long)  # 2 frames of 9 x 6 labels
    native[:, 1:4, 2:7] = 3
    canvas = torch.zeros(2, 12, 12, dtype=torch.long)  # longest side 12: the image is 8 rows x 12
    canvas[:, 2:6, 3:10] = 3

    def batch_for():
        return Batch(frames=torch.zeros(1, 2, 3, 12, 12), log_mel=torch.zeros(1, 2, 96, 64), semantic=canvas[None],
                     frame_present=torch.ones(1, 2, dtype=torch.bool), label_present=torch.ones(1, 2, dtype=torch.bool),
                     targets=[[{}, {}]], clip_ids=["a"], datasets=["avss"],
                     extras={"native_semantic": [native], "content_size": [(8, 12)], "indices": [0]})

    scores = []
    for padding_class in (0, 5):  # whatever the model predicts in the padding is left out
        ids = canvas.clone()
        ids[:, 8:] = padding_class
        [(clip, prediction, labels)] = list(at_label_size(batch_for(), {"ids": ids}, False))
        assert prediction["ids"].shape == labels.shape == (2, 6, 9) and 5 not in prediction["ids"]
        metric = TaskMetric("semantic", 8, 2)
        metric.update(clip, prediction, labels)
        scores.append(metric.compute()["miou"])
    assert scores[0] == scores[1] > 0
# ----------------------------------------------------------------------------- what the engine feeds the metrics


def _reference_loop_binary(model, config, split):
    """The AVSBench test loop, written out: clips in order, batches of 4 clips, the model's
    foreground probability map (never a thresholded mask), J and F per batch, then the mean."""
    dataset = build_dataset(config, split)
    probs, truths = [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        with torch.no_grad():
            out = model(sample.frames[None], sample.log_mel[None], sample.frame_present[None])
        probs.append(foreground_probability(out["pred_logits"], out["pred_masks"], tuple(sample.semantic.shape[-2:])))
        truths.append(sample.semantic > 0)
    j, f, f_hard = [], [], []
    for start in range(0, len(probs), 4):
        p, t = torch.cat(probs[start : start + 4]), torch.cat(truths[start : start + 4])
        j.append(avsbench_j(p, t, probabilities=True))
        f.append(avsbench_f(p, t, probabilities=True))
        f_hard.append(avsbench_f((p > 0.5).float(), t, probabilities=True))
    return float(np.mean(j)), float(np.mean(f)), float(np.mean(f_hard)), torch.cat(probs)


def test_binary_eval_scores_the_probability_map_like_the_reference_loop(ms3_root, monkeypatch):
    config = load_config("configs/cpu/qsd_r18_synth_ms3.yaml",
                         [f"data.root={ms3_root}", *SMALL, "model.num_classes=1", "data.batch_size=3"])
    torch.manual_seed(0)
    model = build_model(config).eval()
    with torch.no_grad():  # every token kept (score >= 0.3), so the map is a spread of probabilities
        model.mask_decoder.class_head.bias.fill_(3.0)
    fed = []
    real_update = AVSBenchMetric.update

    def spy(self, logits, target, clip_index=None):
        fed.append(logits.clone())
        return real_update(self, logits, target, clip_index)

    monkeypatch.setattr(AVSBenchMetric, "update", spy)
    result = evaluate(model, evaluation_loader(config, "train"), config, split="train")
    j, f, f_hard, probs = _reference_loop_binary(model, config, "train")
    # the engine gives the metric the probability map itself, frame for frame
    assert torch.allclose(torch.cat(fed), probs, atol=1e-5)
    assert result["num_clips"] == 6 and result["num_batches"] == 2  # 6 clips: batches of 4 and 2, as test.sh
    assert result["j"] == pytest.approx(j, abs=1e-6)
    assert result["f"] == pytest.approx(f, abs=1e-6)
    assert abs(f - f_hard) > 1e-3  # the test can tell the probability map from the hard mask


def test_avss_eval_scores_the_padded_slots_like_the_reference(tmp_path):
    root = tmp_path / "data"
    generate("avss", root, SynthConfig(clips=8, image_size=32, num_classes=4, seed=5,
                                       avss_subsets=("v1m", "v2"), split=(0.5, 0.25, 0.25), workers=1))
    config = load_config("configs/cpu/qsd_r18_synth_avss.yaml", [f"data.root={root}", *SMALL])
    torch.manual_seed(0)
    model = build_model(config).eval()
    result = evaluate(model, evaluation_loader(config, "train"), config, split="train")
    # the reference: every one of the 10 slots of every clip, padded slots (all background) too;
    # per class, IoU summed over the frames where the class appears, divided by their number
    dataset = build_dataset(config, "train")
    classes = len(class_names(config))
    iou_sum, frames_seen = np.zeros(classes), np.zeros(classes)
    padded = 0
    for index in range(len(dataset)):
        sample = dataset[index]
        padded += int((~sample.frame_present).sum())
        with torch.no_grad():
            out = model(sample.frames[None], sample.log_mel[None], sample.frame_present[None])
        ids = merge_masks(out["pred_logits"], out["pred_masks"], binary=False, size=(32, 32)).numpy()
        for pred, truth in zip(ids, sample.semantic.numpy()):
            for c in range(classes):
                inter, union = np.sum((pred == c) & (truth == c)), np.sum((pred == c) | (truth == c))
                if union:
                    iou_sum[c] += inter / union
                    frames_seen[c] += 1
    assert padded > 0  # v1m clips: 5 real frames and 5 padded slots
    assert result["num_frames"] == 10 * len(dataset)
    expected = np.mean(np.where(frames_seen > 0, iou_sum / np.maximum(frames_seen, 1), 0.0))
    assert result["miou"] == pytest.approx(expected, abs=1e-9)
    assert result["per_class"]["frames"] == frames_seen.astype(int).tolist()
