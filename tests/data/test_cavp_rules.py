"""CAVP's data rules: 255 is ignored by the loss and both metrics, VPO is scored at each image's
native size (one map per image), and the authors' class-remapping quirk is an option."""

import csv

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image
from torch import nn

from avseg.config import load_config
from avseg.data.build import build_dataset
from avseg.data.sample import targets_from_semantic
from avseg.data.targets import masks_to_targets
from avseg.data.vpo import OFFICIAL_CLASSES, class_lookup, read_mask
from avseg.engine.evaluate import evaluate, evaluation_loader
from avseg.metrics import CAVPMetric
from avseg.models.dense_criterion import DenseCriterion

IDS = {c.name: c.id for c in OFFICIAL_CLASSES}  # dog 9, car 5, airplane 1
COCO = {c.name: c.coco_category_ids[0] for c in OFFICIAL_CLASSES}  # dog 18, car 3, airplane 5


# ----------------------------------------------------------------------------- 255 = ignore
def test_an_ignored_pixel_changes_neither_metric():
    target = torch.tensor([[[0, 1, 1], [2, 2, 0]]])
    pred = torch.tensor([[[0, 1, 2], [2, 0, 0]]])
    metric = CAVPMetric(3)
    metric.update(pred, target)
    base = metric.compute()
    for wrong in (0, 1, 2):  # one more pixel, labelled 255, predicted as anything
        metric = CAVPMetric(3)
        metric.update(torch.cat([pred, torch.tensor([[[wrong]] * 2])], dim=2),
                      torch.cat([target, torch.tensor([[[255]] * 2])], dim=2))
        got = metric.compute()
        for key in ("miou", "f1", "fdr", "f03", "pixel_acc", "num_pixels"):
            assert got[key] == pytest.approx(base[key], nan_ok=True), key
    labelled = CAVPMetric(3)  # the same pixels labelled background do change the scores
    labelled.update(torch.cat([pred, torch.tensor([[[2]] * 2])], dim=2),
                    torch.cat([target, torch.tensor([[[0]] * 2])], dim=2))
    assert labelled.compute()["miou"] != pytest.approx(base["miou"])


@pytest.mark.parametrize("binary", [False, True])
def test_an_ignored_pixel_changes_no_dense_loss(binary):
    torch.manual_seed(0)
    channels = 1 if binary else 3
    logits = torch.randn(2, channels, 4, 4)
    semantic = torch.randint(0, 2 if binary else 3, (2, 4, 4))
    semantic[0, 1, 2] = 255
    criterion = DenseCriterion(binary=binary)
    loss = criterion({"semantic_logits": logits}, semantic)["loss_seg"]
    other = logits.clone()
    other[0, :, 1, 2] += torch.linspace(-5, 5, channels) + 3.0
    assert criterion({"semantic_logits": other}, semantic)["loss_seg"] == pytest.approx(float(loss))
    semantic[0, 1, 2] = 0
    counted = criterion({"semantic_logits": other}, semantic)["loss_seg"]
    assert float(counted) != pytest.approx(float(criterion({"semantic_logits": logits}, semantic)["loss_seg"]))
    everything = torch.full_like(semantic, 255)
    assert float(criterion({"semantic_logits": logits}, everything)["loss_seg"]) == 0.0


def test_ignored_pixels_are_in_no_training_target():
    semantic = torch.zeros(6, 6, dtype=torch.int64)
    semantic[0:2, 0:2] = 4
    semantic[4:6, 4:6] = 255
    masks, labels = targets_from_semantic(semantic)
    assert labels.tolist() == [4] and int(masks.sum()) == 4
    assert masks_to_targets(semantic, class_agnostic=False, min_area=1)["labels"].tolist() == [4]
    agnostic = masks_to_targets(semantic, class_agnostic=True, min_area=1)
    assert agnostic["masks"].shape[0] == 1 and not agnostic["masks"][0, 5, 5]


# ----------------------------------------------------------------------------- the remap quirk
def test_remap_correct_by_default_and_the_authors_quirk_on_request(tmp_path):
    values = np.zeros((4, 6), np.uint8)
    values[0, :2] = COCO["car"]
    values[1, :2] = COCO["airplane"]
    values[2, :2] = COCO["dog"]
    values[3, 5] = 255
    path = tmp_path / "mask.png"
    Image.fromarray(values).save(path)
    lookup = class_lookup(OFFICIAL_CLASSES)
    correct = read_mask(path, lookup)
    assert correct[0, 0] == IDS["car"] and correct[1, 0] == IDS["airplane"] and correct[2, 0] == IDS["dog"]
    assert correct[3, 5] == 255 and correct[3, 0] == 0
    quirk = read_mask(path, lookup, "authors")
    assert quirk[0, 0] == IDS["airplane"] and quirk[1, 0] == IDS["airplane"] and quirk[2, 0] == IDS["dog"]
    assert (quirk[3] == correct[3]).all()
    values[1, :2] = 0  # car without airplane: the quirk does nothing
    Image.fromarray(values).save(path)
    assert (read_mask(path, lookup, "authors") == read_mask(path, lookup)).all()


# ----------------------------------------------------------------------------- native-size scoring
SIZES = {42: (40, 30), 43: (24, 36)}  # image id -> (width, height)


def write_vpo_ss(root):
    """CAVP's VPO-SS layout: two dog images of different native sizes, a 255 pixel in each."""
    (root / "VPO-SS" / "data" / "dog").mkdir(parents=True)
    (root / "VPO-SS" / "mask" / "dog").mkdir(parents=True)
    (root / "audios").mkdir()
    rows = []
    for n, (image_id, (width, height)) in enumerate(SIZES.items()):
        Image.new("RGB", (width, height), (90, 120, 30)).save(root / f"VPO-SS/data/dog/{image_id:012d}.jpg")
        mask = np.zeros((height, width), np.uint8)
        mask[2:10, 3:13] = COCO["dog"]
        mask[0, 0] = 255
        Image.fromarray(mask).save(root / f"VPO-SS/mask/dog/{image_id:012d}_{n + 1:012d}.png")
        soundfile.write(root / "audios" / f"clip{n}.wav", np.full(16000 * (2 + n), 0.1 * (n + 1), np.float32), 16000)
        rows.append([f"clip{n}", "dog", COCO["dog"], image_id, n + 1, "test", 0.25])
    with open(root / "VPO-SS" / "vpo_ss_data_stereo.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["vgg_file", "cateName", "cateId", "img_Id", "ann_Ids", "split", "audio_pos"])
        writer.writerows(rows)
    return root


class AllDog(nn.Module):
    """A dense model that calls every pixel "dog", at whatever size it is given."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, frames, log_mel, frame_present):
        steps, height, width = frames.shape[0] * frames.shape[1], frames.shape[-2], frames.shape[-1]
        logits = torch.zeros(steps, len(OFFICIAL_CLASSES) + 1, height, width)
        logits[:, IDS["dog"]] = self.scale
        return {"semantic_logits": logits}


def vpo_config(root, *options):
    return load_config(None, ["data.dataset=vpo_ss", f"data.root={root}", "data.image_size=16",
                              "data.num_workers=0", "data.batch_size=2", "train.num_workers=0", *options])


@pytest.fixture(scope="module")
def vpo_root(tmp_path_factory):
    return write_vpo_ss(tmp_path_factory.mktemp("vpo") / "VPO")


def test_vpo_is_scored_once_per_image_at_its_native_size(vpo_root):
    config = vpo_config(vpo_root, "audio.frontend=cavp")
    assert config.data.vpo_eval == "native"  # the default rule
    loader = evaluation_loader(config, "test")
    assert loader.batch_size == 1
    batches = [batch for batch, _ in loader]
    shapes = sorted(tuple(b.semantic.shape) for b in batches)
    assert shapes == [(1, 1, 30, 40), (1, 1, 36, 24)]  # one frame (one map) per image, native size
    assert all(tuple(b.log_mel.shape) == (1, 1, 2, 300, 64) for b in batches)  # stereo, 3 s
    result = evaluate(AllDog(), loader, config, split="test")
    native = sum(w * h - 1 for w, h in SIZES.values())  # every pixel but the ignored one
    assert result["num_pixels"] == native and result["num_clips"] == 2
    assert result["per_class"]["tp"][IDS["dog"]] == 2 * 8 * 10
    assert result["per_class"]["fp"][IDS["dog"]] == native - 2 * 8 * 10


def test_the_old_square_vote_rule_stays_available(vpo_root):
    config = vpo_config(vpo_root, "data.vpo_eval=square_vote")
    loader = evaluation_loader(config, "test")
    batch, _ = next(iter(loader))
    assert tuple(batch.frames.shape[:2]) == (2, 3) and tuple(batch.semantic.shape[-2:]) == (16, 16)
    result = evaluate(AllDog(), loader, config, split="test")
    ignored = int((batch.semantic[:, 0] == 255).sum())
    assert result["num_pixels"] == 2 * 16 * 16 - ignored


def test_the_remap_option_reaches_the_reader_and_bad_values_are_named(vpo_root):
    assert build_dataset(vpo_config(vpo_root, "data.vpo_remap=authors"), "test").dataset.remap == "authors"
    from avseg.errors import UserError

    with pytest.raises(UserError, match="data.vpo_remap"):
        build_dataset(vpo_config(vpo_root, "data.vpo_remap=quirky"), "test")
    with pytest.raises(UserError, match="data.vpo_eval"):
        evaluation_loader(vpo_config(vpo_root, "data.vpo_eval=bilinear"), "test")
    with pytest.raises(UserError, match="audio.frontend"):
        build_dataset(vpo_config(vpo_root, "audio.frontend=mfcc"), "test")
