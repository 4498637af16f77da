"""`Predictor` feeds a model the audio input of its config's front end, as evaluation does: the
CAVP front end's input for `audio.frontend: cavp` (3 s with channels on Single+ / VPO, 1 s chunks
on AVSS), the VGGish example otherwise (unchanged)."""

from __future__ import annotations

import csv
import fractions
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from avseg.audio.cavp_frontend import cavp_log_mel, load_channels_16k
from avseg.audio.io import load_audio
from avseg.audio.logmel import to_mono_16k, vggish_log_mel
from avseg.config import load_config
from avseg.data.build import build_dataset
from avseg.errors import UserError
from avseg.inference.audio_input import AudioRule, audio_rule
from avseg.inference.video import AudioTimeline, probe_video

ROOT = Path(__file__).resolve().parents[2]
CAVP_CONFIG = ROOT / "configs/cpu/cavp_r18_synth_avss.yaml"
QSD_CONFIG = ROOT / "configs/cpu/qsd_r18_synth_avss.yaml"
sys.path.insert(0, str(ROOT / "tests" / "data"))
import layout_fixtures  # noqa: E402


def _stereo(seconds: float, rate: int) -> np.ndarray:
    """`[n, 2]`: a tone whose pitch changes every second, the right channel half as loud, noise."""
    t = np.arange(int(seconds * rate)) / rate
    pitch = 300.0 + 400.0 * np.floor(t)
    left = 0.3 * np.sin(2 * np.pi * pitch * t) + 0.01 * np.random.default_rng(0).standard_normal(len(t))
    return np.stack([left, 0.5 * left], axis=1).astype(np.float32)


def _predictor(config, overrides):
    from avseg import Predictor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Predictor.from_config(config, overrides, device="cpu")


def _heard(predictor, frames, wave, rate, times=None) -> torch.Tensor:
    """The `log_mel` the model gets from `predict_clip`."""
    seen = {}
    handle = predictor.model.register_forward_pre_hook(lambda m, a, k: seen.update(k), with_kwargs=True)
    try:
        predictor.predict_clip(frames, wave, rate, times=times)
    finally:
        handle.remove()
    return seen["log_mel"]


def _single_plus(root: Path, wave: np.ndarray, rate: int) -> Path:
    for folder in ("frames", "labels", "audios"):
        (root / folder).mkdir(parents=True)
    Image.new("RGB", (24, 20), (40, 90, 120)).save(root / "frames" / "clip.png")
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(root / "labels" / "clip.png")
    soundfile.write(root / "audios" / "clip.wav", wave, rate)
    with open(root / "metadata.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["name", "category", "split"], ["clip", "dog_barking", "test"]])
    return root


def test_single_plus_cavp_predict_gets_the_readers_3_s_stereo_input(tmp_path):
    rate = 44100
    wave = _stereo(4.5, rate)
    root = _single_plus(tmp_path / "sp", wave, rate)
    samples, rate = load_audio(root / "audios" / "clip.wav")  # the wav as stored (16-bit PCM)
    overrides = ["data.dataset=single_plus_cavp", f"data.root={root}", "audio.frontend=cavp", "data.image_size=32",
                 "model.num_classes=23", "model.cavp.audio_channels=2"]
    sample = build_dataset(load_config(CAVP_CONFIG, overrides), "test")[0]
    assert sample.log_mel.shape == (1, 2, 300, 64)
    predictor = _predictor(CAVP_CONFIG, overrides)
    frames = np.zeros((3, 20, 24, 3), np.uint8)
    heard = _heard(predictor, frames, samples, rate, times=[0.0, 1.0, 3.0])
    assert heard.shape == (1, 3, 2, 300, 64)
    assert torch.equal(heard[0, 0], sample.log_mel[0])  # the frame at 0 s: what evaluation feeds
    channels = load_channels_16k(root / "audios" / "clip.wav")  # [2, 72000]
    # the 3 s from 1 s (and the 256 samples after them that the last STFT frame reaches)
    assert torch.equal(heard[0, 1], cavp_log_mel(channels[:, 16000:64256]))
    # at 3 s only 1.5 s (24000 samples) is left: the authors' slice keeps its last 12000, tiled
    tiled = np.tile(channels[:, 48000:][:, -12000:], (1, 4))
    assert torch.equal(heard[0, 2], cavp_log_mel(tiled))
    assert predictor.audio.describe().startswith("16 kHz, 2 channel(s), the 3 s")


def test_avss_cavp_predict_gets_the_readers_1_s_chunks(tmp_path):
    tree = layout_fixtures.write_avss(tmp_path / "avss", clips_per_split=1, subsets=("v2",))
    clip = tree.clips["test"][0]
    rate = 22050
    wave = _stereo(10.0, rate)
    soundfile.write(tree.root / "v2" / clip / "audio.wav", wave, rate)
    samples, rate = load_audio(tree.root / "v2" / clip / "audio.wav")
    overrides = [f"data.root={tree.root}", "audio.frontend=cavp", "data.image_size=32", "data.avss_subsets=[v2]",
                 "model.num_classes=70"]
    sample = build_dataset(load_config(CAVP_CONFIG, overrides), "test")[0]
    assert sample.log_mel.shape == (10, 1, 96, 64)
    predictor = _predictor(CAVP_CONFIG, overrides)
    heard = _heard(predictor, np.zeros((10, 32, 32, 3), np.uint8), samples, rate)
    assert heard.shape == (1, 10, 1, 96, 64)
    assert torch.equal(heard[0], sample.log_mel)
    later = _heard(predictor, np.zeros((2, 32, 32, 3), np.uint8), samples, rate, times=[3.0, 9.5])[0]
    mono = load_channels_16k(tree.root / "v2" / clip / "audio.wav").mean(axis=0)
    assert torch.allclose(later[0], sample.log_mel[3], atol=1e-6)
    half = np.concatenate([mono[152000:], np.zeros(8000, np.float32)])  # past the end: zeros
    assert torch.allclose(later[1], cavp_log_mel(half[None], 96)[None], atol=1e-5)


def test_a_vggish_config_still_hears_one_vggish_example_per_frame(predictor):
    rate = 44100
    wave = _stereo(3.0, rate)
    assert audio_rule(predictor.config).kind == "vggish"
    heard = _heard(predictor, np.zeros((3, 32, 32, 3), np.uint8), wave, rate, times=[0.0, 1.5, 2.7])
    mono = to_mono_16k(wave, rate).astype(np.float32)
    for k, start in enumerate((0, 24000, 43200)):
        piece = np.zeros(15600, np.float32)
        got = mono[start:start + 15600]
        piece[:len(got)] = got
        assert torch.equal(heard[0, k], torch.from_numpy(vggish_log_mel(piece, 16000, num_examples=1)[0])), k


def test_stream_keeps_channels_and_trims_at_the_end_of_the_track(tmp_path, make_video):
    path = make_video(tmp_path / "s.mp4", seconds=4, audio_rate=44100, channels=2, size=(32, 32),
                      fps=fractions.Fraction(5))
    samples, rate = load_audio(path)
    full = load_channels_16k(path)  # [2, n], what the readers load
    assert full.shape[0] == 2
    with AudioTimeline(probe_video(path), keep_channels=True) as audio:
        for start in (0.0, 1.0, 2.5):
            window = audio.window(start, 48000, trim_end=True)
            first = int(start * 16000)
            expected = full[:, first:first + 48000]
            assert window.shape == expected.shape, start
            np.testing.assert_allclose(window, expected, atol=1e-5)
        assert audio.window(10.0, 100, trim_end=True).shape == (2, 0)
    overrides = ["data.dataset=vpo_ss", "audio.frontend=cavp", "data.image_size=32", "model.num_classes=21",
                 "model.cavp.audio_channels=2"]
    predictor = _predictor(CAVP_CONFIG, overrides)
    items = []
    original = predictor._run
    predictor._run = lambda windows: (items.extend(i for w in windows for i in w), original(windows))[1]
    predictor.predict_video(path, window=2)
    assert [item.time for item in items] == [0.0, 1.0, 2.0, 3.0]
    rule = predictor.audio
    for item in items:
        expected = rule.features(full[:, int(item.time * 16000):int(item.time * 16000) + 48000])
        np.testing.assert_allclose(item.log_mel, expected, atol=1e-3)
    assert (items[-1].log_mel.max(axis=-1) > -0.9).all()  # tiled, not padded with silence
    with pytest.raises(Exception, match="3 audio channels, the model takes 2"):
        rule.features(np.zeros((3, 48000), np.float32), "x.wav")


@pytest.mark.parametrize("kind", ["vggish", "cavp_clip"])
def test_every_audio_rule_refuses_a_transposed_track_and_a_bad_rate(kind):
    """Both paths (mono VGGish, channels kept for CAVP) check the track as `to_mono_16k` does."""
    rule = AudioRule(kind, channels=2)
    with pytest.raises(ValueError, match=r"more channels than samples.*\[samples, channels\]"):
        rule.waveform(np.zeros((2, 16000), np.float32), 16000)
    with pytest.raises(ValueError, match="sample_rate must be a positive integer"):
        rule.waveform(np.zeros((16000, 2), np.float32), 0)
    assert rule.waveform(np.zeros((16000, 2), np.float32), 16000).shape[-1] == 16000


def test_an_unknown_front_end_is_refused_by_name():
    config = load_config(CAVP_CONFIG, ["audio.frontend=mel"])
    with pytest.raises(UserError, match="audio.frontend 'mel': expected one of vggish, cavp"):
        audio_rule(config)


@pytest.mark.parametrize("rule", [AudioRule(), AudioRule("cavp_chunk"), AudioRule("cavp_clip", channels=2, tail=256)])
def test_input_shape_is_what_features_make(rule):
    """model-info and bench speed feed random audio of `input_shape`: the shape a real frame gets."""
    wave = rule.waveform(np.random.default_rng(0).normal(0, 0.1, (4 * 44100, 2)).astype(np.float32), 44100)
    assert rule.features(rule.cut(wave, 16000)).shape == rule.input_shape
