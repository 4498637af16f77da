"""S4 / MS3 readers on tiny trees in the official layouts (fixtures: conftest.py)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import layout_fixtures
from avseg.audio import load_audio, vggish_log_mel
from avseg.data import layouts
from avseg.data.avsbench import MS3Dataset, S4Dataset
from avseg.data.build import build_reader as build_dataset
from avseg.data.avss import AVSSDataset
from avseg.data.sample import SOUNDING, collate_samples
from avseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ClipTransform
from avseg.errors import UserError


def _index(dataset, clip_id):
    return [clip.clip_id for clip in dataset.clips].index(clip_id)


def test_s4_train_labels_first_frame_only(s4_tree):
    dataset = S4Dataset(s4_tree.root, "train", image_size=32)
    assert len(dataset) == 2
    sample = dataset[0]
    assert sample.frames.shape == (5, 3, 32, 32) and sample.frames.dtype == torch.float32
    assert sample.log_mel.shape == (5, 96, 64) and sample.log_mel.dtype == torch.float32
    assert sample.semantic.shape == (5, 32, 32) and sample.semantic.dtype == torch.int64
    assert sample.frame_present.tolist() == [True] * 5
    assert sample.label_present.tolist() == [True, False, False, False, False]
    truth = s4_tree.truth[(sample.clip_id, 0)]
    assert torch.equal(sample.semantic[0], torch.from_numpy(truth.astype(np.int64)) * SOUNDING)
    assert int(sample.semantic[1:].abs().sum()) == 0
    assert sample.masks[0].shape == (1, 32, 32) and sample.labels[0].tolist() == [SOUNDING]
    assert torch.equal(sample.masks[0][0], torch.from_numpy(truth))
    assert all(m.shape == (0, 32, 32) for m in sample.masks[1:]) and all(len(l) == 0 for l in sample.labels[1:])
    assert (sample.dataset, sample.subset, sample.category) == ("s4", None, layout_fixtures.S4_CATEGORIES[0])
    assert sample.waveform is None


@pytest.mark.parametrize("split", ["val", "test"])
def test_s4_eval_splits_label_all_frames(s4_tree, split):
    sample = S4Dataset(s4_tree.root, split, image_size=32)[1]
    assert sample.label_present.tolist() == [True] * 5
    for t in range(5):
        assert np.array_equal(sample.semantic[t].numpy(), s4_tree.truth[(sample.clip_id, t)].astype(np.int64))


def test_resize_frames_bilinear_masks_nearest(s4_tree):
    sample = S4Dataset(s4_tree.root, "val", image_size=20)[0]
    assert sample.frames.shape == (5, 3, 20, 20) and sample.semantic.shape == (5, 20, 20)
    for t in range(5):
        mask = Image.fromarray(s4_tree.truth[(sample.clip_id, t)].astype(np.uint8))
        expected = np.asarray(mask.resize((20, 20), Image.Resampling.NEAREST))
        assert np.array_equal(sample.semantic[t].numpy(), expected)
    clip = S4Dataset(s4_tree.root, "val", image_size=20).clips[0]
    frame = Image.open(clip.frames[2]).convert("RGB").resize((20, 20), Image.Resampling.BILINEAR)
    expected = (np.asarray(frame, np.float32) / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert np.allclose(sample.frames[2].permute(1, 2, 0).numpy(), expected, atol=1e-5)


def test_ms3_palette_masks_all_frames(ms3_tree):
    dataset = MS3Dataset(ms3_tree.root, "train", image_size=32)
    sample = dataset[1]
    assert sample.label_present.tolist() == [True] * 5 and sample.category is None
    assert sample.dataset == "ms3"
    for t in range(5):
        truth = ms3_tree.truth[(sample.clip_id, t)]
        assert np.array_equal(sample.semantic[t].numpy() == SOUNDING, truth)
        assert sample.masks[t].shape == (1, 32, 32)


def test_log_mel_comes_from_the_wav(s4_tree):
    dataset = S4Dataset(s4_tree.root, "test", image_size=32)
    sample = dataset[0]
    expected = vggish_log_mel(*load_audio(dataset.clips[0].audio), num_examples=5)
    assert np.allclose(sample.log_mel.numpy(), expected, atol=1e-6)
    tone_only = vggish_log_mel(layout_fixtures.tone(5.0), layout_fixtures.SAMPLE_RATE, num_examples=5)
    loudest_band = sample.log_mel.mean(dim=1).argmax(dim=-1)  # the 440 Hz tone's band, every second
    assert loudest_band.tolist() == tone_only.mean(axis=1).argmax(axis=-1).tolist()


def test_waveform_is_mono_16k_on_request(s4_tree):
    dataset = S4Dataset(s4_tree.root, "train", image_size=32, load_waveform=True)
    stereo = dataset[1]  # its wav is 22.05 kHz stereo
    assert stereo.waveform.dtype == torch.float32 and stereo.waveform.dim() == 1
    assert abs(stereo.waveform.shape[0] - 5 * 16_000) <= 2
    batch = collate_samples([dataset[0], stereo])
    assert batch.waveform.shape[0] == 2


def test_log_mel_pkl_only_with_opt_in(s4_tree):
    plain = S4Dataset(s4_tree.root, "train", image_size=32)[1]
    assert not torch.allclose(plain.log_mel, layout_fixtures.pkl_value(1)[:, 0])
    with pytest.warns(UserWarning, match="run code"):
        dataset = S4Dataset(s4_tree.root, "train", image_size=32, use_log_mel_pkl=True)
    sample = dataset[1]
    assert sample.log_mel.shape == (5, 96, 64)
    assert torch.equal(sample.log_mel, layout_fixtures.pkl_value(1)[:, 0])


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pkl_that_runs_code_is_refused(copy_tree, s4_tree, tmp_path):
    root = copy_tree(s4_tree)
    marker = tmp_path / "pwned"
    clip = layouts.list_clips(root, "s4", split="train")[0]
    clip.log_mel_pkl.write_bytes(pickle.dumps(_RunsCode(str(marker))))
    S4Dataset(root, "train", image_size=32)[0]  # without opt-in the pickle is never opened
    with pytest.warns(UserWarning):
        dataset = S4Dataset(root, "train", image_size=32, use_log_mel_pkl=True)
    with pytest.raises(UserError, match=r"audio_log_mel/train/.*\.pkl: cannot read.*refusing"):
        dataset[0]
    assert not marker.exists()


def test_collate_two_samples(ms3_tree):
    dataset = MS3Dataset(ms3_tree.root, "val", image_size=32)
    batch = collate_samples([dataset[0], dataset[1]])
    assert batch.frames.shape == (2, 5, 3, 32, 32) and batch.log_mel.shape == (2, 5, 96, 64)
    assert batch.semantic.shape == (2, 5, 32, 32) and batch.label_present.all()
    assert batch.targets[1][4]["labels"].tolist() == [SOUNDING]


def test_horizontal_flip_applies_to_the_whole_clip(s4_tree):
    plain = S4Dataset(s4_tree.root, "train", image_size=32)[0]
    flipped = S4Dataset(s4_tree.root, "train", image_size=32, train_transforms=ClipTransform(32, hflip_prob=1.0))[0]
    assert torch.equal(flipped.frames, plain.frames.flip(-1))
    assert torch.equal(flipped.semantic, plain.semantic.flip(-1))
    with pytest.raises(ValueError, match="image_size"):
        S4Dataset(s4_tree.root, "train", image_size=32, train_transforms=ClipTransform(64))


def test_damaged_or_missing_files_raise_user_errors(copy_tree, s4_tree):
    root = copy_tree(s4_tree)
    dataset = S4Dataset(root, "val", image_size=32)
    clip = dataset.clips[0]
    clip.frames[3].unlink()
    with pytest.raises(UserError, match=rf"^s4_data/visual_frames/val/.*/{clip.clip_id}_4\.png: missing image"):
        dataset[0]
    clip = dataset.clips[1]
    data = clip.masks[2].read_bytes()
    clip.masks[2].write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=rf"^s4_data/gt_masks/val/.*/{clip.clip_id}_3\.png: cannot decode image"):
        dataset[1]
    clip.masks[2].write_bytes(b"not a png at all")
    with pytest.raises(UserError, match=rf"{clip.clip_id}_3\.png: cannot decode image"):
        dataset[1]
    test_clip = S4Dataset(root, "test", image_size=32).clips[0]
    test_clip.audio.write_bytes(test_clip.audio.read_bytes()[:44])  # header only
    with pytest.raises(UserError, match=r"^s4_data/audio_wav/test/.*\.wav: cannot read audio"):
        S4Dataset(root, "test", image_size=32)[0]


def test_bad_root_split_and_csv_are_user_errors(tmp_path, ms3_tree):
    with pytest.raises(UserError, match="not found"):
        S4Dataset(tmp_path / "nowhere", "train")
    with pytest.raises(UserError, match="unknown split"):
        MS3Dataset(ms3_tree.root, "training")
    (tmp_path / layouts.MS3_CSV).write_text("video_id,splt\nabc,train\n")
    with pytest.raises(UserError, match=r"^ms3_meta_data\.csv: missing column\(s\) split"):
        MS3Dataset(tmp_path, "train")


def test_build_dataset_names(s4_tree, ms3_tree, avss_tree):
    assert isinstance(build_dataset("s4", s4_tree.root, "val", image_size=32), S4Dataset)
    assert isinstance(build_dataset("ms3", ms3_tree.root, "val"), MS3Dataset)
    avss = build_dataset("avss", avss_tree.root, "val")
    single = build_dataset("single_plus", avss_tree.root, "val")
    assert isinstance(single, AVSSDataset) and single.subsets == ("v1s",)
    assert len(single) == 2 and len(avss) == 6
    with pytest.raises(ValueError, match="unknown data set"):
        build_dataset("vggsound", s4_tree.root, "val")
