"""AVSS reader: padding flags as the reference, class ids from colours, crop vs resize."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from avseg.data import layouts
from avseg.data.avss import AVSSDataset
from avseg.data.sample import collate_samples
from avseg.data.transforms import crop_resize
from avseg.errors import UserError

FIVE = [True] * 5 + [False] * 5

# (subset, split) -> (frame_present, label_present), as the reference pads to 10 slots
FLAGS = {
    ("v1s", "train"): (FIVE, [True] + [False] * 9),
    ("v1s", "val"): (FIVE, FIVE),
    ("v1s", "test"): (FIVE, FIVE),
    ("v1m", "train"): (FIVE, FIVE),
    ("v1m", "test"): (FIVE, FIVE),
    ("v2", "train"): ([True] * 10, [True] * 10),
    ("v2", "val"): ([True] * 10, [True] * 10),
}


@pytest.mark.parametrize(("subset", "split"), sorted(FLAGS))
def test_padding_and_flags_follow_the_reference(avss_tree, subset, split):
    dataset = AVSSDataset(avss_tree.root, split, subsets=(subset,), image_size=32)
    assert len(dataset) == 2
    sample = dataset[1]
    frame_present, label_present = FLAGS[(subset, split)]
    assert sample.frame_present.tolist() == frame_present
    assert sample.label_present.tolist() == label_present
    assert sample.frames.shape == (10, 3, 32, 32) and sample.log_mel.shape == (10, 96, 64)
    assert sample.semantic.shape == (10, 32, 32) and sample.semantic.dtype == torch.int64
    real = sum(frame_present)
    assert int(sample.frames[real:].abs().sum()) == 0 and int(sample.log_mel[real:].abs().sum()) == 0
    assert bool((sample.log_mel[:real] != 0).all(dim=(1, 2)).all())  # every real second has audio
    for t in range(10):
        if not label_present[t]:
            assert int(sample.semantic[t].abs().sum()) == 0 and sample.masks[t].shape[0] == 0
    assert (sample.dataset, sample.subset, sample.clip_id) == ("avss", subset, f"{subset}_{split}_1")


@pytest.mark.parametrize("subset", ["v1s", "v1m"])
def test_class_ids_come_from_the_colours(avss_tree, subset):
    sample = AVSSDataset(avss_tree.root, "test", subsets=(subset,), image_size=32)[0]
    for t in range(5):
        truth = avss_tree.truth[(sample.clip_id, t)]
        assert np.array_equal(sample.semantic[t].numpy(), truth)
        assert sample.labels[t].tolist() == sorted(set(np.unique(truth).tolist()) - {0})
        for mask, class_id in zip(sample.masks[t], sample.labels[t]):
            assert np.array_equal(mask.numpy(), truth == int(class_id))


def test_eval_resizes_and_train_crops(avss_tree):
    """v2 frames are 48 x 32: val squashes them to 32 x 32, train keeps the centre square."""
    val = AVSSDataset(avss_tree.root, "val", subsets=("v2",), image_size=32)[0]
    train = AVSSDataset(avss_tree.root, "train", subsets=("v2",), image_size=32)[0]
    for t in (0, 9):
        truth = avss_tree.truth[(val.clip_id, t)]
        squashed = np.asarray(Image.fromarray(truth.astype(np.int32)).resize((32, 32), Image.Resampling.NEAREST))
        assert np.array_equal(val.semantic[t].numpy(), squashed)
        truth = avss_tree.truth[(train.clip_id, t)]
        assert np.array_equal(train.semantic[t].numpy(), truth[:, 8:40])  # round((48 - 32) / 2) = 8


def test_crop_resize_matches_the_reference_arithmetic():
    image = Image.new("RGB", (300, 200))
    assert crop_resize(image, 224).size == (224, 224)  # short side 200 -> 224, long 336, crop
    tall = Image.fromarray(np.arange(40 * 20, dtype=np.uint8).reshape(40, 20))
    out = np.asarray(crop_resize(tall, 20, is_mask=True))
    assert np.array_equal(out, np.asarray(tall)[10:30])


def test_off_palette_colours_read_as_background(copy_tree, avss_tree):
    root = copy_tree(avss_tree)
    dataset = AVSSDataset(root, "test", subsets=("v2",), image_size=32)
    clip = dataset.clips[0]
    rgb = np.array(Image.open(clip.masks[4]).convert("RGB"))
    rgb[:4, :4] = (1, 2, 3)
    Image.fromarray(rgb).save(clip.masks[4])
    truth = avss_tree.truth[(clip.clip_id, 4)].copy()
    truth[:4, :4] = 0
    semantic = dataset[0].semantic[4].numpy()
    squashed = np.asarray(Image.fromarray(truth.astype(np.int32)).resize((32, 32), Image.Resampling.NEAREST))
    assert np.array_equal(semantic, squashed)


def test_classes_from_label2idx(avss_tree):
    dataset = AVSSDataset(avss_tree.root, "val", image_size=32)
    assert dataset.num_classes == 71 and dataset.class_names[0] == "background"
    assert dataset.class_names[12] == "class_12"
    assert len(dataset) == 6 and {clip.subset for clip in dataset.clips} == set(layouts.AVSS_SUBSETS)


def test_collate_mixed_subsets(avss_tree):
    dataset = AVSSDataset(avss_tree.root, "train", image_size=32)
    first = dataset[0]
    last = dataset[len(dataset) - 1]
    assert (first.subset, last.subset) == ("v1s", "v2")
    batch = collate_samples([first, last])
    assert batch.frames.shape == (2, 10, 3, 32, 32) and batch.semantic.shape == (2, 10, 32, 32)
    assert batch.frame_present.sum(dim=1).tolist() == [5, 10]
    assert batch.label_present.sum(dim=1).tolist() == [1, 10]


def test_pad_to(avss_tree):
    sample = AVSSDataset(avss_tree.root, "val", subsets=("v1m",), image_size=32, pad_to=5)[0]
    padded = AVSSDataset(avss_tree.root, "val", subsets=("v1m",), image_size=32)[0]
    assert sample.frames.shape[0] == 5 and sample.label_present.all() and sample.frame_present.all()
    for name in ("frames", "log_mel", "semantic"):  # the same 5 real slots, without the padding
        assert torch.equal(getattr(sample, name), getattr(padded, name)[:5]), name
    with pytest.raises(ValueError, match="pad_to"):
        AVSSDataset(avss_tree.root, "val", subsets=("v1m", "v2"), pad_to=5)
    with pytest.raises(UserError, match="subset"):
        AVSSDataset(avss_tree.root, "val", subsets=("v3",))


def test_broken_label2idx_and_missing_label(copy_tree, avss_tree):
    root = copy_tree(avss_tree)
    dataset = AVSSDataset(root, "val", subsets=("v1m",), image_size=32)
    dataset.clips[1].masks[3].unlink()
    with pytest.raises(UserError, match=r"^v1m/v1m_val_1/labels_rgb/3\.png: missing image"):
        dataset[1]
    (root / layouts.AVSS_LABELS).write_text(json.dumps(["not", "a", "map"]))
    with pytest.raises(UserError, match=r"^label2idx\.json: expected an object"):
        AVSSDataset(root, "val")


def test_longest_side_keeps_the_aspect_pads_and_keeps_the_labels_at_their_size(avss_tree):
    """v2 frames are 48 x 32: longest side 32 -> a 32 x 21 image in the top rows of a 32 x 32 canvas."""
    sample = AVSSDataset(avss_tree.root, "val", subsets=("v2",), image_size=32, resize="longest_side")[0]
    assert sample.content_size == (21, 32)  # round(32 * 32 / 48) = 21 rows
    for t in (0, 9):
        truth = avss_tree.truth[(sample.clip_id, t)]
        scaled = np.asarray(Image.fromarray(truth.astype(np.int32)).resize((32, 21), Image.Resampling.NEAREST))
        assert np.array_equal(sample.semantic[t, :21].numpy(), scaled)
        assert bool((sample.semantic[t, 21:] == 0).all())
        assert np.array_equal(sample.native_semantic[t].numpy(), truth)  # scored at 48 x 32
    assert float(sample.frames[0, :, 21:].abs().max()) < 0.02  # padded with the mean colour (~0 normalised)
    batch = collate_samples([sample, sample])
    assert batch.extras["content_size"] == [(21, 32), (21, 32)]
    assert batch.extras["native_semantic"][0].shape == (10, 32, 48)
    square = AVSSDataset(avss_tree.root, "val", subsets=("v2",), image_size=32)[0]
    assert square.native_semantic is None and square.content_size is None
