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
from avseg.models.build import build_model
from avseg.models.postprocess import foreground_probability, merge_masks

SMALL = ["data.image_size=32", "model.d_model=32", "model.n_heads=4", "model.ffn_dim=64", "model.encoder_layers=1",
         "model.asd_layers=1", "model.decoder_layers=2", "model.codebook_size=16", "model.num_tokens=3",
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
    assert 0.0 <= metrics["miou"] <= 1.0 and metrics["split"] == "test"
    with open(tmp_path / "eval" / "per_class.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["class_name"] for row in rows] == class_names(config) and "iou" in rows[0]
    # masks at the ground truth's relative paths, in the palette; none for the damaged clip
    good = dataset.clips[0]
    relative = good.masks[0].relative_to(avss_root)
    saved = np.asarray(Image.open(tmp_path / "masks" / relative).convert("RGB"))
    assert saved.shape == (32, 32, 3)
    ids, outside = rgb_to_ids(saved, 71)
    assert ids.max() < len(class_names(config))
    assert not (tmp_path / "masks" / damaged.masks[0].relative_to(avss_root)).exists()
    assert (tmp_path / "overlays" / good.clip_id / "0.png").is_file()


def test_evaluate_binary_task_uses_the_foreground_probability(ms3_root, tmp_path):
    config = load_config("configs/cpu/qsd_r18_synth_ms3.yaml",
                         [f"data.root={ms3_root}", *SMALL, "model.num_classes=1"])
    torch.manual_seed(0)
    model = build_model(config).eval()
    result = evaluate(model, evaluation_loader(config, "train"), config, split="train")
    assert result["main_metric"] == "j" and result["num_clips"] == 6 and result["frames_per_clip"] == 5
    assert {"j", "f", "f_batch_independent"} <= result.keys()


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
