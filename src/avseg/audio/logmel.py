"""VGGish log-mel front end: waveform -> examples of 96 frames x 64 mel bands.

This reproduces the front end of Google's VGGish (``vggish_input.waveform_to_examples`` and
``mel_features.py`` in the TensorFlow release and its PyTorch port) step by step:

1. integer PCM is scaled to [-1, 1] (int16 / 32768, as VGGish does; int32 / 2**31; uint8
   (x - 128) / 128); float input is used as it is;
2. ``[samples, channels]`` is averaged over channels (before resampling, like VGGish);
3. any rate is resampled to 16 kHz with soxr (VGGish used resampy; the two differ slightly,
   see docs/audio.md); 16 kHz input is not touched;
4. STFT magnitude: frames of 400 samples (25 ms) every 160 samples (10 ms), WITHOUT padding
   (``1 + (n - 400) // 160`` frames), periodic Hann window, FFT length 512 -> 257 bins;
5. 64 mel bands 125-7500 Hz, HTK mel scale, triangles linear in mel, DC bin zeroed;
6. ``log(mel + 0.01)``;
7. non-overlapping examples of 96 frames (0.96 s), hop 96 frames; a trailing partial example
   is dropped.

Everything is computed in float64 like the reference and returned as float32.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import soxr

SAMPLE_RATE = 16000  # Hz, the rate VGGish works at
STFT_WINDOW_SAMPLES = 400  # 25 ms
STFT_HOP_SAMPLES = 160  # 10 ms
FFT_LENGTH = 512
NUM_FFT_BINS = FFT_LENGTH // 2 + 1  # 257
NUM_BANDS = 64  # mel bands per frame
NUM_MEL_BINS = NUM_BANDS
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
NUM_FRAMES = 96  # STFT frames per example
EXAMPLE_HOP_FRAMES = 96  # examples do not overlap
EXAMPLE_WINDOW_SECONDS = 0.96
EXAMPLE_HOP_SECONDS = 0.96
# Fewest 16 kHz samples that give one complete example: 400 + 160 * 95 = 15600 (0.975 s).
MIN_SAMPLES_PER_EXAMPLE = STFT_WINDOW_SAMPLES + STFT_HOP_SAMPLES * (NUM_FRAMES - 1)
RESAMPLER_QUALITY = "HQ"  # soxr quality preset used for every rate conversion

_HTK_MEL_BREAK_HZ = 700.0
_HTK_MEL_Q = 1127.0


def hertz_to_mel(frequencies_hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: ``1127 * ln(1 + f / 700)`` (same shape as the input)."""
    return _HTK_MEL_Q * np.log1p(np.asarray(frequencies_hz, dtype=np.float64) / _HTK_MEL_BREAK_HZ)


@lru_cache(maxsize=1)
def _mel_matrix_cached() -> np.ndarray:
    bins_mel = hertz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2.0, NUM_FFT_BINS))  # [257]
    edges = np.linspace(hertz_to_mel(MEL_MIN_HZ), hertz_to_mel(MEL_MAX_HZ), NUM_BANDS + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]  # [64] each
    rising = (bins_mel[:, None] - lower) / (center - lower)  # [257, 64]
    falling = (upper - bins_mel[:, None]) / (upper - center)  # [257, 64]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0  # HTK leaves out the DC bin
    weights.setflags(write=False)
    return weights


def mel_matrix() -> np.ndarray:
    """VGGish's spectrogram-to-mel matrix, float64 ``[257, 64]`` (``mel = magnitude @ M``)."""
    return _mel_matrix_cached().copy()


def periodic_hann(length: int) -> np.ndarray:
    """Periodic Hann window ``[length]``: one full cosine period of length ``length``."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)


def _to_float(waveform: np.ndarray) -> np.ndarray:
    """Integer PCM -> float64 in [-1, 1] (VGGish's scaling); float -> float64 unchanged."""
    if waveform.dtype == np.int16:
        return waveform.astype(np.float64) / 32768.0
    if waveform.dtype == np.int32:
        return waveform.astype(np.float64) / 2147483648.0
    if waveform.dtype == np.uint8:
        return (waveform.astype(np.float64) - 128.0) / 128.0
    if np.issubdtype(waveform.dtype, np.floating):
        return waveform.astype(np.float64, copy=False)
    raise ValueError(
        f"waveform dtype {waveform.dtype} is not supported: give float, int16, int32 or uint8 PCM"
    )


def check_waveform(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """`waveform` as an array, checked to be ``[samples]`` or ``[samples, channels]`` (not
    ``[channels, samples]``) at a positive integer `sample_rate`; ValueError naming the problem."""
    waveform = np.asarray(waveform)
    if waveform.ndim not in (1, 2):
        raise ValueError(
            f"waveform must be [samples] or [samples, channels]; got shape {waveform.shape}"
        )
    if waveform.ndim == 2 and waveform.shape[1] > waveform.shape[0]:
        raise ValueError(
            f"waveform of shape {waveform.shape} has more channels than samples: it looks like "
            "[channels, samples]; pass it transposed as [samples, channels]"
        )
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer; got {sample_rate!r}")
    return waveform


def to_mono_16k(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """Scale, average channels and resample to 16 kHz, as VGGish does before its STFT.

    Args:
        waveform: ``[samples]`` or ``[samples, channels]``; float, int16, int32 or uint8.
        sample_rate: rate of ``waveform`` in Hz.

    Returns:
        float64 ``[samples_16k]``.
    """
    waveform = check_waveform(waveform, sample_rate)
    mono = _to_float(waveform)
    if mono.ndim == 2:
        mono = mono.mean(axis=1)
    if int(sample_rate) != SAMPLE_RATE and mono.size > 0:
        mono = soxr.resample(
            np.ascontiguousarray(mono), int(sample_rate), SAMPLE_RATE, quality=RESAMPLER_QUALITY
        )
    return mono


def log_mel_spectrogram(mono_16k: np.ndarray) -> np.ndarray:
    """float64 ``[samples]`` at 16 kHz -> float64 log-mel ``[num_frames, 64]``.

    ``num_frames = 1 + (samples - 400) // 160`` (no padding); 0 when ``samples < 400``.
    """
    mono_16k = np.asarray(mono_16k, dtype=np.float64)
    if mono_16k.shape[0] < STFT_WINDOW_SAMPLES:
        return np.zeros((0, NUM_BANDS), dtype=np.float64)
    frames = np.lib.stride_tricks.sliding_window_view(mono_16k, STFT_WINDOW_SAMPLES)
    frames = frames[::STFT_HOP_SAMPLES]  # [num_frames, 400], a view
    windowed = frames * periodic_hann(STFT_WINDOW_SAMPLES)
    magnitude = np.abs(np.fft.rfft(windowed, n=FFT_LENGTH, axis=1))  # [num_frames, 257]
    return np.log(magnitude @ _mel_matrix_cached() + LOG_OFFSET)


def _fit_to_examples(mono_16k: np.ndarray, num_examples: int) -> np.ndarray:
    """Zero-pad or cut a 16 kHz waveform to exactly ``num_examples`` seconds."""
    target = num_examples * SAMPLE_RATE
    if mono_16k.shape[0] >= target:
        return mono_16k[:target]
    return np.concatenate([mono_16k, np.zeros(target - mono_16k.shape[0], dtype=mono_16k.dtype)])


def vggish_log_mel(
    waveform: np.ndarray, sample_rate: int, num_examples: int | None = None
) -> np.ndarray:
    """Waveform -> VGGish input examples, float32 ``[N, 96, 64]``.

    Args:
        waveform: ``[samples]`` or ``[samples, channels]`` (channels are averaged); float
            (used as it is, expected in [-1, 1]), int16, int32 or uint8 PCM (scaled to [-1, 1]).
        sample_rate: rate of ``waveform`` in Hz; anything other than 16 kHz is resampled.
        num_examples: when given, the 16 kHz waveform is zero-padded (silence) or cut to
            ``num_examples`` seconds and exactly ``num_examples`` examples come back, example
            ``i`` starting at ``0.96 * i`` s (so index i lines up with video second / frame i).
            When None, every complete example that fits: a 5 s clip gives 5, a clip shorter
            than 0.975 s (15600 samples at 16 kHz) gives 0 (shape ``[0, 96, 64]``).

    Returns:
        float32 ``[N, 96, 64]``: N examples, 96 frames of 10 ms, 64 log-mel bands.
    """
    if num_examples is not None and (int(num_examples) != num_examples or num_examples < 0):
        raise ValueError(f"num_examples must be None or an integer >= 0; got {num_examples!r}")
    mono = to_mono_16k(waveform, sample_rate)
    if num_examples is not None:
        mono = _fit_to_examples(mono, int(num_examples))
    log_mel = log_mel_spectrogram(mono)  # [num_frames, 64]
    count = (
        (log_mel.shape[0] - NUM_FRAMES) // EXAMPLE_HOP_FRAMES + 1
        if log_mel.shape[0] >= NUM_FRAMES
        else 0
    )
    if num_examples is not None:
        # N seconds hold at least N examples (100N - 2 frames >= 96N); longer than 24 s
        # they hold more, because examples advance 0.96 s: keep the first N.
        count = int(num_examples)
    examples = log_mel[: count * NUM_FRAMES].reshape(count, NUM_FRAMES, NUM_BANDS)
    return examples.astype(np.float32)
