"""The values the AVSS reader returns, each checked against an independent computation.

Written from the readers' mutation survivors (docs/testing.md section 4): class names from
label2idx.json, labels_semantic in every PNG mode, RGBA labels_rgb, colours beyond the class list,
the waveform with both audio front ends, defaults, flags, train transforms and the constructor's
and files' errors.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import layout_fixtures
from layout_fixtures import read_wav, write_tone_wav
from avseg.audio import vggish_log_mel
from avseg.data import layouts
from avseg.data.avss import AVSSDataset, read_class_names
from avseg.data.palette import ids_to_rgb
from avseg.data.transforms import ClipTransform
from avseg.errors import UserError

RATE = layout_fixtures.SAMPLE_RATE
def test_class_names_from_label2idx(tmp_path):
    (tmp_path / layouts.AVSS_LABELS).write_text(json.dumps({"background": 0, "dog": 2}))
    assert read_class_names(tmp_path) == ["background", "", "dog"]  # an id without a name: ""
    for broken in ({}, {"background": 0, "odd": -1}):
        (tmp_path / layouts.AVSS_LABELS).write_text(json.dumps(broken))
        with pytest.raises(UserError) as caught:
            read_class_names(tmp_path)
        assert str(caught.value) == "label2idx.json: expected class ids >= 0, background = 0"


@pytest.mark.parametrize("mode", ["L", "P", "RGB"])
def test_labels_semantic_in_every_mode_read_as_ids(copy_tree, avss_tree, mode):
    """The bytes are the ids: a palette image's indices, not its colours; RGB greys as one byte."""
    root = copy_tree(avss_tree)
    folder = root / "v1m" / "v1m_val_0" / "labels_semantic"
    folder.mkdir()
    written = []
    for t in range(5):
        ids = np.zeros((32, 32), np.uint8)
        ids[t: t + 9, 4:20] = 5 + t
        image = Image.fromarray(ids, mode="L")
        if mode == "P":
            image = Image.fromarray(ids, mode="P")
            image.putpalette([(37 * i) % 256 for i in range(768)])  # colours unlike the indices
        elif mode == "RGB":
            image = image.convert("RGB")
        image.save(folder / f"{t}.png")
        written.append(ids.astype(np.int64))
    dataset = AVSSDataset(root, "val", subsets=("v1m",), image_size=32)
    index = [clip.clip_id for clip in dataset.clips].index("v1m_val_0")
    assert np.array_equal(dataset[index].semantic[:5].numpy(), np.stack(written))


def test_labels_rgb_with_alpha_read_by_colour(copy_tree, avss_tree):
    root = copy_tree(avss_tree)
    dataset = AVSSDataset(root, "val", subsets=("v1s",), image_size=32)
    clip = dataset.clips[0]
    truth = avss_tree.truth[(clip.clip_id, 0)]
    rgba = np.concatenate([ids_to_rgb(truth), np.full((*truth.shape, 1), 255, np.uint8)], axis=-1)
    Image.fromarray(rgba, mode="RGBA").save(clip.masks[0])
    assert np.array_equal(dataset[0].semantic[0].numpy(), truth)


def test_avss_waveform_with_both_front_ends(copy_tree, avss_tree):
    root = copy_tree(avss_tree)
    for frontend, mel_shape in (("vggish", (10, 96, 64)), ("cavp", (10, 1, 96, 64))):
        dataset = AVSSDataset(root, "test", subsets=("v1m",), image_size=32, frontend=frontend,
                              load_waveform=True)
        assert dataset.load_waveform is True and dataset.split == "test"
        sample = dataset[0]
        written = read_wav(dataset.clips[0].audio)
        assert sample.waveform.shape == (5 * RATE,) and np.allclose(sample.waveform.numpy(), written, atol=1e-6)
        assert tuple(sample.log_mel.shape) == mel_shape
    plain = AVSSDataset(root, "test", subsets=("v1m",), image_size=32)[0]
    assert plain.waveform is None


def test_avss_defaults_flags_and_a_long_wav(copy_tree, avss_tree):
    root = copy_tree(avss_tree)
    dataset = AVSSDataset(root, "val", subsets=("v1m",))
    assert dataset.image_size == 224 and dataset.frontend == "vggish"
    clip = dataset.clips[0]
    audio = write_tone_wav(clip.audio, 7.0)  # two seconds more than the clip's five frames
    sample = dataset[0]
    assert sample.frames.shape == (10, 3, 224, 224)
    assert sample.frame_present.dtype == torch.bool and sample.label_present.dtype == torch.bool
    assert sample.frame_present.tolist() == [True] * 5 + [False] * 5
    assert sample.log_mel.shape == (10, 96, 64) and int(sample.log_mel[5:].count_nonzero()) == 0
    expected = vggish_log_mel(read_wav(audio), RATE, num_examples=5)
    assert np.allclose(sample.log_mel[:5].numpy(), expected, atol=1e-5)


def test_avss_train_transforms_are_used(avss_tree):
    plain = AVSSDataset(avss_tree.root, "train", subsets=("v1m",), image_size=32)[0]
    flipped = AVSSDataset(avss_tree.root, "train", subsets=("v1m",), image_size=32,
                          train_transforms=ClipTransform(32, crop=True, hflip_prob=1.0))[0]
    assert torch.equal(flipped.semantic, plain.semantic.flip(-1))


def test_avss_constructor_and_file_errors(copy_tree, avss_tree):
    with pytest.raises(UserError) as subsets:
        AVSSDataset(avss_tree.root, "val", subsets=("v1s", "v3"))
    assert str(subsets.value) == "unknown AVSS subset(s) ['v3']; expected some of v1s, v1m, v2"
    with pytest.raises(UserError) as frontend:
        AVSSDataset(avss_tree.root, "val", frontend="VGGish")
    assert str(frontend.value) == "audio.frontend 'VGGish': expected one of vggish, cavp"
    root = copy_tree(avss_tree)
    dataset = AVSSDataset(root, "val", subsets=("v1m",), image_size=32)
    clip = dataset.clips[0]
    clip.frames[2].unlink()
    with pytest.raises(UserError) as frame:
        dataset[0]
    assert str(frame.value).startswith(f"v1m/{clip.clip_id}/frames/")
    clip = dataset.clips[1]
    clip.audio.unlink()
    with pytest.raises(UserError) as audio:
        dataset[1]
    assert str(audio.value) == f"v1m/{clip.clip_id}/audio.wav: missing audio file" + layout_fixtures.CHECK_DATA


def test_avss_cavp_front_end_reads_the_waveform_only_on_request(copy_tree, avss_tree):
    root = copy_tree(avss_tree)
    dataset = AVSSDataset(root, "test", subsets=("v1m",), image_size=32, frontend="cavp")
    assert dataset[0].waveform is None
    short = write_tone_wav(dataset.clips[1].audio, 4.0)
    with_waveform = AVSSDataset(root, "test", subsets=("v1m",), image_size=32, frontend="cavp", load_waveform=True)
    with pytest.warns(UserWarning, match=r"audio\.wav: 4\.00 s of audio for a 5 s clip"):
        sample = with_waveform[1]
    assert np.allclose(sample.waveform.numpy(), read_wav(short), atol=1e-6)


def test_avss_colours_beyond_the_class_list_read_as_background(copy_tree, avss_tree):
    """label2idx.json with 13 classes: the fixture's class-40 colour is outside this palette."""
    root = copy_tree(avss_tree)
    (root / layouts.AVSS_LABELS).write_text(json.dumps({"background": 0} | {f"c{i}": i for i in range(1, 13)}))
    dataset = AVSSDataset(root, "val", subsets=("v1m",), image_size=32)
    assert dataset.num_classes == 13
    sample = dataset[0]
    truth = avss_tree.truth[(dataset.clips[0].clip_id, 0)]
    expected = np.where(truth < 13, truth, 0)
    assert 40 in truth and np.array_equal(sample.semantic[0].numpy(), expected)
