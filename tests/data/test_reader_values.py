"""The values the S4 / MS3 readers and the shared reading helpers return, each checked against an
independent computation (AVSS: test_avss_reader_values.py).

Written from the readers' mutation survivors (docs/testing.md section 4): mask decoding of every
image mode, the audio reader's warnings, defaults and messages, the pickled log-mel's checks, the
clip lists' messages, padding helpers, dtypes of the flags, and the longest-side labels of S4 / MS3.
"""

from __future__ import annotations

import csv
import io
import os
import pickle
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image

import layout_fixtures
from layout_fixtures import read_wav, write_tone_wav
from avseg.audio import vggish_log_mel
from avseg.data import layouts
from avseg.data.avsbench import (
    S4Dataset,
    binary_mask_image,
    frames_tensor,
    list_split_clips,
    pad_examples,
    pick_transform,
    read_audio,
    read_log_mel_pkl,
)
from avseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ClipTransform
from avseg.errors import UserError

CHECK_DATA = layout_fixtures.CHECK_DATA
RATE = layout_fixtures.SAMPLE_RATE


# ----------------------------------------------------------------------------- masks


def _foreground() -> np.ndarray:
    """A non-square (5 x 7) pattern, so that a reduction over the wrong axis changes the shape."""
    mask = np.zeros((5, 7), dtype=bool)
    mask[1, 2] = mask[3, 5] = mask[4, 0] = True
    return mask


def _mask_in_mode(mode: str) -> Image.Image:
    """`_foreground()` drawn in `mode`: foreground in one colour channel only, alpha inverted.

    Background pixels are fully opaque with zero colour, foreground pixels fully transparent, so
    a reader that counted the alpha channel as colour would see every pixel as foreground.
    """
    fg = _foreground()
    if mode == "L":
        return Image.fromarray(np.where(fg, 200, 0).astype(np.uint8), mode="L")
    if mode == "P":
        image = Image.fromarray(np.where(fg, 3, 0).astype(np.uint8), mode="P")
        image.putpalette([255, 0, 0] + [0, 0, 0] * 2 + [0, 0, 7] + [0, 0, 0] * 252)  # index 0 is red
        return image
    channels = {"RGB": 3, "RGBA": 4, "RGBa": 4, "LA": 2, "La": 2, "PA": 2}[mode]
    array = np.zeros((5, 7, channels), dtype=np.uint8)
    colour = channels - 1 if mode in ("RGBA", "RGBa", "LA", "La", "PA") else channels
    array[..., colour - 1][fg] = 9  # the last colour channel (blue, or the grey / index)
    if colour < channels:
        array[..., -1] = np.where(fg, 0, 255)
    return Image.frombytes(mode, (7, 5), array.tobytes())


@pytest.mark.parametrize("mode", ["L", "P", "RGB", "RGBA", "RGBa", "LA", "La", "PA"])
def test_binary_mask_of_every_image_mode(mode):
    mask = binary_mask_image(_mask_in_mode(mode))
    assert mask.mode == "L" and mask.size == (7, 5)
    values = np.asarray(mask)
    assert values.dtype == np.uint8 and np.array_equal(values, _foreground().astype(np.uint8))


# ----------------------------------------------------------------------------- audio


def test_read_audio_defaults_and_the_log_mel_count(tmp_path):
    path = write_tone_wav(tmp_path / "clip" / "long.wav", 6.5)
    mel, mono = read_audio(path, tmp_path, 5)
    assert mono is None  # the waveform only on request
    assert mel.dtype == torch.float32 and mel.shape == (5, 96, 64)  # padded / truncated to the clip
    assert np.allclose(mel.numpy(), vggish_log_mel(read_wav(path), RATE, num_examples=5), atol=1e-5)
    mel, mono = read_audio(path, tmp_path, 5, log_mel=False, waveform=True)
    assert mel is None and mono.shape == (int(6.5 * RATE),)


def test_read_audio_waveform_is_the_channel_mean(tmp_path):
    left = layout_fixtures.tone(2.0)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    path = tmp_path / "stereo.wav"
    layout_fixtures.write_wav(path, stereo, RATE)
    _, mono = read_audio(path, tmp_path, 2, log_mel=False, waveform=True)
    assert mono.dtype == torch.float32 and np.allclose(mono.numpy(), read_wav(path)[:, 0] / 2, atol=1e-6)


@pytest.mark.parametrize("seconds, warned", [(4.5, True), (4.55, False), (5.0, False), (7.0, False)])
def test_short_audio_warning_boundary(tmp_path, seconds, warned):
    path = write_tone_wav(tmp_path / "audio" / "clip.wav", seconds)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_audio(path, tmp_path, 5)
    messages = [w for w in caught if issubclass(w.category, UserWarning)]
    if not warned:
        assert messages == []
        return
    assert len(messages) == 1
    assert str(messages[0].message) == ("audio/clip.wav: 4.50 s of audio for a 5 s clip; "
                                        "the rest is padded with silence")
    assert not messages[0].filename.endswith("avsbench.py")  # points at a caller of read_audio


def test_read_audio_errors_name_the_file(tmp_path):
    with pytest.raises(UserError) as missing:
        read_audio(tmp_path / "audio" / "gone.wav", tmp_path, 5)
    assert str(missing.value) == "audio/gone.wav: missing audio file" + CHECK_DATA
    broken = tmp_path / "audio" / "broken.wav"
    broken.parent.mkdir()
    broken.write_bytes(b"RIFF....WAVEfmt not really a wav file")
    with pytest.raises(UserError) as bad:
        read_audio(broken, tmp_path, 5)
    message = str(bad.value)
    assert message.startswith("audio/broken.wav: cannot read audio (") and message.endswith(")")
    reason = message[len("audio/broken.wav: cannot read audio ("):-1]
    assert "could not be decoded" in reason and str(tmp_path) not in reason and "'broken.wav'" in reason


# ----------------------------------------------------------------------------- log-mel pickles


def _pickle(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(value))
    return path


def test_log_mel_pkl_shapes_and_dtype(tmp_path):
    value = torch.arange(5 * 96 * 64, dtype=torch.float64).view(5, 1, 96, 64) / 7
    read = read_log_mel_pkl(_pickle(tmp_path / "a.pkl", value), tmp_path)
    assert read.dtype == torch.float32 and read.shape == (5, 96, 64)
    assert torch.allclose(read, value[:, 0].float())
    three = read_log_mel_pkl(_pickle(tmp_path / "b.pkl", value[:3, 0].float()), tmp_path, num_examples=3)
    assert torch.equal(three, value[:3, 0].float())


@pytest.mark.parametrize("shape, reported", [
    ((5, 2, 96, 64), "(5, 2, 96, 64)"),  # two channels are not one example per second
    ((4, 1, 96, 64), "(4, 96, 64)"),  # one second short
    ((5, 1, 96, 63), "(5, 96, 63)"),  # the wrong number of mel bands
])
def test_log_mel_pkl_of_the_wrong_shape_is_named(tmp_path, shape, reported):
    path = _pickle(tmp_path / "audio_log_mel" / "x.pkl", torch.zeros(shape))
    with pytest.raises(UserError) as caught:
        read_log_mel_pkl(path, tmp_path)
    assert str(caught.value) == f"audio_log_mel/x.pkl: log-mel has shape {reported}, expected [5, 1, 96, 64]"


def test_log_mel_pkl_that_is_no_tensor_or_missing(tmp_path):
    path = _pickle(tmp_path / "audio_log_mel" / "d.pkl", OrderedDict(a=1))
    with pytest.raises(UserError) as caught:
        read_log_mel_pkl(path, tmp_path)
    assert str(caught.value) == "audio_log_mel/d.pkl: expected a pickled tensor, found OrderedDict"
    with pytest.raises(UserError) as missing:
        read_log_mel_pkl(tmp_path / "audio_log_mel" / "none.pkl", tmp_path)
    assert str(missing.value) == "audio_log_mel/none.pkl: missing log-mel pickle" + CHECK_DATA


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


class _StorageBlob:
    """Pickles as torch's storage helper applied to `blob` (a torch.save file)."""

    def __init__(self, blob: bytes):
        self.blob = blob

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (self.blob,))


def test_code_hidden_in_the_storage_bytes_is_not_run(tmp_path):
    """The storage bytes are a torch.save file of their own: they are loaded weights-only too."""
    marker = tmp_path / "pwned"
    blob = io.BytesIO()
    torch.save(_RunsCode(str(marker)), blob)
    path = _pickle(tmp_path / "evil.pkl", _StorageBlob(blob.getvalue()))
    with pytest.raises(UserError, match=r"^evil\.pkl: cannot read the log-mel pickle"):
        read_log_mel_pkl(path, tmp_path)
    assert not marker.exists()


# ----------------------------------------------------------------------------- clip lists


def _keep_rows(csv_path, keep):
    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    fields = list(rows[0])
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(row for row in rows if keep(row))


def test_clip_list_messages(copy_tree, s4_tree, avss_tree):
    with pytest.raises(UserError) as unknown:
        list_split_clips(s4_tree.root, "s4", "training")
    assert str(unknown.value) == "unknown split 'training'; expected one of train, val, test"
    s4 = copy_tree(s4_tree)
    _keep_rows(s4 / layouts.S4_CSV, lambda row: row["split"] != "test")
    with pytest.raises(UserError) as empty:
        list_split_clips(s4, "s4", "test")
    assert str(empty.value) == "s4_meta_data.csv: no clips with split 'test'"
    avss = copy_tree(avss_tree)
    _keep_rows(avss / layouts.AVSS_CSV, lambda row: row["label"] == "v1s")
    with pytest.raises(UserError) as none_in_subsets:
        list_split_clips(avss, "avss", "train", ("v1m", "v2"))
    assert str(none_in_subsets.value) == "metadata.csv: no clips with split 'train' in subset(s) v1m, v2"


# ----------------------------------------------------------------------------- padding helpers


def test_padding_helpers_pad_with_zeros():
    frames = [Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))]
    padded = frames_tensor(frames, slots=3)  # 3 slots: the frames' channel count, a tempting mix-up
    assert padded.shape == (3, 3, 4, 4) and padded.dtype == torch.float32
    red = (np.array([1.0, 0.0, 0.0]) - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert np.allclose(padded[0, :, 0, 0].numpy(), red, atol=1e-6)
    assert int(padded[2].count_nonzero()) == 0
    examples = torch.rand(3, 96, 64)
    wide = pad_examples(examples, 96)  # 96 slots: the mel frames' count, the same mix-up
    assert wide.shape == (96, 96, 64) and torch.equal(wide[:3], examples) and int(wide[3:].count_nonzero()) == 0
    assert pad_examples(examples, 3) is examples


def test_eval_transform_defaults_to_the_square_resize():
    assert pick_transform("s4", "val", 32, None).resize == "square"
    assert pick_transform("s4", "test", 32, None, "longest_side").resize == "longest_side"


# ----------------------------------------------------------------------------- S4 / MS3 datasets


def test_s4_defaults_and_its_training_transform(s4_tree):
    dataset = S4Dataset(s4_tree.root, "val")
    assert dataset.split == "val" and dataset.image_size == 224
    sample = dataset[0]
    assert sample.frames.shape == (5, 3, 224, 224) and sample.semantic.shape == (5, 224, 224)
    assert sample.frame_present.dtype == torch.bool and sample.label_present.dtype == torch.bool
    assert sample.subset is None and sample.native_semantic is None
    train = S4Dataset(s4_tree.root, "train", image_size=32)
    assert train.transform == ClipTransform(size=32, crop=False)  # S4 / MS3 train with a plain resize


def test_s4_longest_side_keeps_the_labels_at_their_size(s4_tree):
    dataset = S4Dataset(s4_tree.root, "val", image_size=48, resize="longest_side")
    sample = dataset[1]
    truth = np.stack([s4_tree.truth[(sample.clip_id, t)] for t in range(5)]).astype(np.int64)
    assert sample.native_semantic.dtype == torch.int64
    assert np.array_equal(sample.native_semantic.numpy(), truth)  # 32 x 32, 0 / 1
    assert sample.content_size == (48, 48)


def test_pkl_warning_points_at_the_caller_and_reads_no_waveform(s4_tree):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = S4Dataset(s4_tree.root, "train", image_size=32, use_log_mel_pkl=True)
    assert [w.category for w in caught] == [UserWarning] and not caught[0].filename.endswith("avsbench.py")
    sample = dataset[0]
    assert sample.waveform is None and torch.equal(sample.log_mel, layout_fixtures.pkl_value(0)[:, 0])


def test_a_long_wav_still_gives_five_examples(copy_tree, s4_tree):
    root = copy_tree(s4_tree)
    dataset = S4Dataset(root, "test", image_size=32)
    audio = write_tone_wav(dataset.clips[0].audio, 7.0)
    sample = dataset[0]
    assert sample.log_mel.shape == (5, 96, 64)
    assert np.allclose(sample.log_mel.numpy(), vggish_log_mel(read_wav(audio), RATE, num_examples=5), atol=1e-5)


def test_an_undecodable_image_names_the_decoders_reason(copy_tree, s4_tree):
    root = copy_tree(s4_tree)
    dataset = S4Dataset(root, "val", image_size=32)
    clip = dataset.clips[0]
    clip.frames[1].write_bytes(b"not an image")
    with pytest.raises(UserError) as caught:
        dataset[0]
    name = clip.frames[1].name
    assert str(caught.value).endswith(f": cannot decode image (cannot identify image file '{name}')")
