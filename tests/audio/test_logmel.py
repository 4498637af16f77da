"""vggish_log_mel against an independent, loop-based implementation of VGGish's front end."""

import math

import numpy as np
import pytest

from avseg.audio import (
    LOG_OFFSET,
    MIN_SAMPLES_PER_EXAMPLE,
    NUM_BANDS,
    NUM_FRAMES,
    SAMPLE_RATE,
    vggish_log_mel,
)


def _htk_mel(hz):
    return 1127.0 * math.log(1.0 + hz / 700.0)


def _reference_mel_weights():
    """[257, 64] triangle weights, built band by band and bin by bin from the HTK formula."""
    num_bins = 257
    edges_lo, edges_hi = _htk_mel(125.0), _htk_mel(7500.0)
    step = (edges_hi - edges_lo) / (NUM_BANDS + 1)
    weights = np.zeros((num_bins, NUM_BANDS))
    for band in range(NUM_BANDS):
        left = edges_lo + band * step
        peak = left + step
        right = peak + step
        for k in range(1, num_bins):  # bin 0 (DC) stays zero
            mel = _htk_mel(k * SAMPLE_RATE / 512.0)
            if left < mel <= peak:
                weights[k, band] = (mel - left) / (peak - left)
            elif peak < mel < right:
                weights[k, band] = (right - mel) / (right - peak)
    return weights


def _reference_examples(signal_16k):
    """Independent VGGish front end: loop framing, DFT matrix, loop mel weights."""
    n = np.arange(400)
    window = np.sin(np.pi * n / 400.0) ** 2  # periodic Hann written as sin^2
    k = np.arange(257)[:, None]
    t = np.arange(400)[None, :]
    dft_cos = np.cos(2 * np.pi * k * t / 512.0)  # [257, 400]; zero padding to 512 is implicit
    dft_sin = np.sin(2 * np.pi * k * t / 512.0)
    weights = _reference_mel_weights()
    rows = []
    start = 0
    while start + 400 <= len(signal_16k):
        chunk = signal_16k[start : start + 400] * window
        magnitude = np.hypot(dft_cos @ chunk, dft_sin @ chunk)
        rows.append(np.log(magnitude @ weights + 0.01))
        start += 160
    log_mel = np.array(rows).reshape(-1, NUM_BANDS)
    examples = [log_mel[i : i + 96] for i in range(0, len(log_mel) - 95, 96)]
    return np.array(examples).reshape(-1, NUM_FRAMES, NUM_BANDS)


def _tone(freq, seconds, rate=SAMPLE_RATE, amplitude=0.5, phase=0.0):
    t = np.arange(int(round(seconds * rate))) / rate
    return amplitude * np.sin(2 * np.pi * freq * t + phase)


@pytest.mark.parametrize(
    "signal",
    [
        np.random.default_rng(0).standard_normal(20000) * 0.2,
        _tone(440.0, 2.1) + 0.3 * _tone(3100.0, 2.1, phase=0.7),
        np.random.default_rng(1).uniform(-1, 1, 31999) * np.linspace(0, 1, 31999),
    ],
    ids=["noise", "two-tones", "ramped-noise"],
)
def test_matches_independent_implementation(signal):
    expected = _reference_examples(signal)
    got = vggish_log_mel(signal, SAMPLE_RATE)
    assert got.dtype == np.float32
    assert got.shape == expected.shape and got.shape[0] >= 1
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_1khz_tone_peaks_in_band_containing_1khz():
    centres_mel = np.linspace(_htk_mel(125.0), _htk_mel(7500.0), NUM_BANDS + 2)[1:-1]
    expected_band = int(np.argmin(np.abs(centres_mel - _htk_mel(1000.0))))
    spectrum = vggish_log_mel(_tone(1000.0, 1.0), SAMPLE_RATE).mean(axis=(0, 1))  # [64]
    assert int(np.argmax(spectrum)) == expected_band
    assert spectrum[expected_band] - spectrum[expected_band + 10] > 5.0


def test_five_seconds_give_five_examples_each_from_its_own_samples():
    assert vggish_log_mel(np.zeros(5 * SAMPLE_RATE), SAMPLE_RATE).shape == (5, 96, 64)
    assert vggish_log_mel(np.zeros(10 * SAMPLE_RATE), SAMPLE_RATE).shape == (10, 96, 64)
    # example i is the 0.975 s (15600 samples) starting at 0.96 * i s, VGGish's example hop
    signal = np.random.default_rng(4).standard_normal(5 * SAMPLE_RATE) * 0.1
    examples = vggish_log_mel(signal, SAMPLE_RATE)
    for i in range(5):
        start = int(round(0.96 * i * SAMPLE_RATE))
        alone = vggish_log_mel(signal[start : start + MIN_SAMPLES_PER_EXAMPLE], SAMPLE_RATE)
        np.testing.assert_allclose(examples[i], alone[0], atol=1e-4)


def test_short_clip_gives_zero_examples():
    assert MIN_SAMPLES_PER_EXAMPLE == 15600
    just_enough = np.zeros(MIN_SAMPLES_PER_EXAMPLE)
    assert vggish_log_mel(just_enough, SAMPLE_RATE).shape == (1, 96, 64)
    assert vggish_log_mel(just_enough[:-1], SAMPLE_RATE).shape == (0, 96, 64)
    assert vggish_log_mel(np.zeros(10), SAMPLE_RATE).shape == (0, 96, 64)


def test_num_examples_pads_with_silence():
    signal = np.random.default_rng(2).standard_normal(int(3.5 * SAMPLE_RATE)) * 0.1
    unpadded = vggish_log_mel(signal, SAMPLE_RATE)
    padded = vggish_log_mel(signal, SAMPLE_RATE, num_examples=5)
    assert unpadded.shape[0] == 3 and padded.shape == (5, 96, 64)
    np.testing.assert_array_equal(padded[:3], unpadded)
    # Example 4 starts at 3.84 s, after the signal ends at 3.5 s: pure silence.
    np.testing.assert_allclose(padded[4], np.float32(np.log(LOG_OFFSET)), atol=1e-6)
    assert vggish_log_mel(signal[:100], SAMPLE_RATE, num_examples=2).shape == (2, 96, 64)


def test_num_examples_truncates_and_handles_long_clips():
    signal = np.random.default_rng(3).standard_normal(7 * SAMPLE_RATE) * 0.1
    full = vggish_log_mel(signal, SAMPLE_RATE)
    cut = vggish_log_mel(signal, SAMPLE_RATE, num_examples=5)
    assert full.shape[0] == 7 and cut.shape == (5, 96, 64)
    np.testing.assert_array_equal(cut, full[:5])
    assert vggish_log_mel(signal, SAMPLE_RATE, num_examples=0).shape == (0, 96, 64)
    # 30 s hold 31 examples at a 0.96 s hop: num_examples keeps the first 30.
    long = np.zeros(30 * SAMPLE_RATE)
    assert vggish_log_mel(long, SAMPLE_RATE).shape[0] == 31
    assert vggish_log_mel(long, SAMPLE_RATE, num_examples=30).shape[0] == 30
    with pytest.raises(ValueError):
        vggish_log_mel(signal, SAMPLE_RATE, num_examples=-1)


def test_stereo_equals_mono_mean():
    rng = np.random.default_rng(4)
    stereo = rng.standard_normal((20000, 2)) * 0.2
    np.testing.assert_allclose(
        vggish_log_mel(stereo, SAMPLE_RATE), vggish_log_mel(stereo.mean(axis=1), SAMPLE_RATE),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="channels, samples"):
        vggish_log_mel(stereo.T, SAMPLE_RATE)


def test_int16_equals_float_over_32768():
    pcm = (np.random.default_rng(5).standard_normal(20000) * 3000).astype(np.int16)
    np.testing.assert_allclose(
        vggish_log_mel(pcm, SAMPLE_RATE),
        vggish_log_mel(pcm.astype(np.float64) / 32768.0, SAMPLE_RATE),
        atol=1e-6,
    )
    unscaled = vggish_log_mel(pcm.astype(np.float64), SAMPLE_RATE)  # floats are not rescaled
    assert np.abs(vggish_log_mel(pcm, SAMPLE_RATE) - unscaled).max() > 1.0


def test_44k_tone_close_to_16k_tone():
    at_16k = vggish_log_mel(_tone(1000.0, 2.0, rate=16000), 16000)
    at_44k = vggish_log_mel(_tone(1000.0, 2.0, rate=44100), 44100)
    assert at_44k.shape == at_16k.shape == (2, 96, 64)
    # soxr is not bit-exact: a loose bound (seen: mean 3e-5, max 1e-2 at the clip start).
    diff = np.abs(at_44k - at_16k)
    assert diff.mean() < 1e-3 and diff.max() < 0.05, (diff.mean(), diff.max())
