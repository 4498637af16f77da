"""CAVP's audio front end against a plain numpy re-derivation, a pure tone, stereo gains and the crop rule."""

import numpy as np
import pytest
import torch

from avseg.audio import cavp_frontend as cf

RATE = 16_000


def numpy_reference(wave: np.ndarray, frames: int) -> np.ndarray:
    """The rule written out by hand: reflect-pad 256, frames of 512 every 160, periodic Hann of
    400 centred in 512, |rfft|^2, HTK-mel triangles linear in Hz (125-3800 Hz, 64), dB / 100."""
    padded = np.pad(wave, ((0, 0), (256, 256)), mode="reflect")
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    window = np.zeros(512)
    window[56:456] = hann
    count = 1 + wave.shape[1] // 160
    chunks = np.stack([padded[:, i * 160:i * 160 + 512] for i in range(count)], axis=1)  # [C, T, 512]
    power = np.abs(np.fft.rfft(chunks * window, axis=-1)) ** 2  # [C, T, 257]
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    edges = 700 * (10 ** (np.linspace(mel(125.0), mel(3800.0), 66) / 2595) - 1)
    freqs = np.linspace(0, 8000, 257)
    bank = np.zeros((257, 64))
    for m in range(64):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        bank[:, m] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
    bands = power @ bank
    return (20 * np.log10(np.maximum(1e-5, bands)) / 100)[:, :frames]


def tone(freq: float, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_matches_the_rule_written_out_in_numpy():
    rng = np.random.default_rng(0)
    wave = (rng.standard_normal((2, 3 * RATE)) * 0.1).astype(np.float32)
    features = cf.clip_log_mel(wave)
    assert features.shape == (2, 300, 64) and features.dtype == torch.float32
    np.testing.assert_allclose(features.numpy(), numpy_reference(wave.astype(np.float64), 300), atol=2e-4)


def test_a_pure_tone_lands_in_the_band_around_its_frequency():
    for freq in (500.0, 1000.0, 2500.0):
        features = cf.clip_log_mel(tone(freq, 3.0))[0]  # [300, 64]
        peak = int(features[150].argmax())
        edges = cf.mel_to_hz(torch.linspace(float(cf.hz_to_mel(torch.tensor(125.0))),
                                            float(cf.hz_to_mel(torch.tensor(3800.0))), 66))
        assert float(edges[peak]) < freq < float(edges[peak + 2]), (freq, peak)
    low = cf.clip_log_mel(tone(60.0, 3.0))[0]  # below 125 Hz: leakage only, far under a band tone
    assert float(low[150].max()) < float(cf.clip_log_mel(tone(1000.0, 3.0))[0, 150].max()) - 0.2


def test_stereo_keeps_channels_and_gains_show_as_db():
    mono = tone(1000.0, 3.0)
    stereo = np.stack([0.25 * mono, 0.75 * mono])
    features = cf.clip_log_mel(stereo)
    assert features.shape == (2, 300, 64)
    band = int(features[1, 150].argmax())
    difference = float(features[1, 150, band] - features[0, 150, band])
    assert difference == pytest.approx(20 * np.log10(9) / 100, abs=1e-4)  # power ratio (0.75 / 0.25)^2
    silent = cf.clip_log_mel(np.zeros((1, 3 * RATE), np.float32))
    assert torch.allclose(silent, torch.full_like(silent, -1.0))  # 20 log10(1e-5) / 100


def test_crop_centre_and_the_authors_tiling_of_short_clips():
    wave = np.arange(10)[None]
    assert cf.crop(wave, 4).tolist() == [[3, 4, 5, 6]]
    # 1-3 s in a 3 s crop: the authors' negative start keeps the last length//2 - n//2 samples
    assert cf.crop(np.arange(8)[None], 12).tolist() == [[6, 7] * 6]
    assert cf.crop(np.arange(8)[None], 12, short="start").tolist() == [list(range(8)) + [0, 1, 2, 3]]
    # under a third of the crop: the slice start clamps to 0, the whole wave is tiled
    assert cf.crop(np.arange(3)[None], 12).tolist() == [[0, 1, 2] * 4]
    assert torch.equal(cf.crop(torch.arange(8)[None], 12), torch.tensor([[6, 7] * 6]))
    with pytest.raises(ValueError):
        cf.crop(np.zeros((1, 0)), 4)


def test_two_second_clip_is_tiled_from_its_last_half_second():
    first, last = tone(500.0, 1.5), tone(2500.0, 0.5)
    features = cf.clip_log_mel(np.concatenate([first, last])[None])  # 2 s: keeps 3 s // 2 - 1 s = 0.5 s
    high = int(cf.clip_log_mel(tone(2500.0, 3.0))[0, 150].argmax())
    assert features.shape == (1, 300, 64) and int(features[0, 150].argmax()) == high


def test_avss_chunks_one_second_each_from_the_channel_mean():
    wave = np.zeros((2, 10 * RATE), np.float32)
    wave[0, 3 * RATE:4 * RATE] = tone(1000.0, 1.0)  # second 3 of the left channel only
    chunks = cf.avss_chunks(wave)
    assert chunks.shape == (10, 1, 96, 64)
    loud = chunks.amax(dim=(1, 2, 3))
    quiet = loud[[0, 1, 2, 4, 5, 6, 7, 8, 9]]
    assert int(loud.argmax()) == 3 and torch.allclose(quiet, torch.full_like(quiet, -1.0))
    single = cf.cavp_log_mel(wave.mean(axis=0, keepdims=True)[:, 3 * RATE:4 * RATE], 96)
    assert torch.allclose(chunks[3], single)


def test_too_short_for_the_frames_is_an_error():
    with pytest.raises(ValueError, match="STFT frames"):
        cf.cavp_log_mel(np.zeros((1, 16000), np.float32), 300)
