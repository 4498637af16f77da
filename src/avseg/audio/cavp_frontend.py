"""CAVP's audio front end: a waveform with its channels kept -> a scaled log-mel `[C, frames, 64]`.

The rule of cyh-0/CAVP (its audio datasets and `preprocess_audio` of the trainers), written
with torch only (no torchaudio; docs/audio.md "CAVP front end"):

1. the waveform at 16 kHz, channels kept (VPO stereo: 2 channels; AVSS: the channel mean);
2. a crop to the clip length (`crop`): the centre `length` samples; a shorter wave is tiled,
   starting where the authors' slicing starts (`SHORT_START`);
3. a power mel spectrogram per channel: STFT n_fft 512, periodic Hann window of 400 samples
   (zero-padded to 512, centred), hop 160, centred frames (reflect padding of 256 samples),
   |X|^2, then 64 triangular filters between 125 and 3800 Hz on the HTK mel scale, the triangles
   linear in Hz between mel-spaced points, no normalisation (torchaudio's MelSpectrogram
   defaults with those arguments);
4. the first `frames` frames (300 for a 3 s clip, 96 for a 1 s AVSS chunk), time first;
5. 20 * log10(max(1e-5, x)) / 100 (the authors' dB, then `norm_range` to [-100, 100] dB).

`cavp_log_mel(wave)` gives float32 `[C, frames, 64]`; `avss_chunks(wave)` the AVSS form
`[10, 1, 96, 64]` (the 10 s crop of the channel mean cut into ten 1 s chunks).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

SAMPLE_RATE = 16_000
N_FFT = 512
WINDOW = 400
HOP = 160
NUM_BANDS = 64
F_MIN = 125.0
F_MAX = 3800.0
AMIN = 1e-5  # the authors' floor before the dB conversion
DB_RANGE = 100.0  # norm_range(x, spec_min=-100, spec_max=100) == x / 100
CLIP_SECONDS = 3.0  # VPO and Single+ (the authors' audio_len = 3.0)
CLIP_FRAMES = 300  # the authors keep 300 STFT frames when audio_len != 1
CHUNK_FRAMES = 96  # ... and 96 when audio_len == 1 (AVSS: 1 s chunks)
AVSS_SECONDS = 10
SHORT_STARTS = ("authors", "start")


def crop(wave: np.ndarray | Tensor, length: int, short: str = "authors"):
    """`[C, n]` -> `[C, length]`: the centre `length` samples, or a tiling when n < length.

    The centre starts at n // 2 - length // 2. A shorter wave is tiled: `short="authors"` tiles
    what the authors' slice `wave[:, start:start + length]` holds: its negative start counts
    from the end, so for length / 3 <= n < length (1-3 s clips in a 3 s crop) it is the last
    length // 2 - n // 2 samples, and below that the whole wave. `short="start"` tiles the
    whole wave from its first sample (avseg's VGGish path, `avseg.data.vpo_audio`).
    """
    if short not in SHORT_STARTS:
        raise ValueError(f"short={short!r}: expected one of {SHORT_STARTS}")
    n = int(wave.shape[-1])
    if n == 0:
        raise ValueError("empty waveform")
    start = n // 2 - length // 2
    if n >= length:
        return wave[..., start:start + length]
    piece = wave
    if short == "authors" and n + start >= 0:  # python's negative slice start
        piece = wave[..., n + start:min(start + length, n)]
    repeats = length // int(piece.shape[-1]) + 1
    if isinstance(piece, Tensor):
        return piece.repeat(*([1] * (piece.dim() - 1)), repeats)[..., :length]
    return np.tile(piece, [1] * (piece.ndim - 1) + [repeats])[..., :length]


def hz_to_mel(hz: Tensor) -> Tensor:
    """HTK mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=4)
def _filterbank(n_fft: int, bands: int, f_min: float, f_max: float, rate: int) -> Tensor:
    freqs = torch.linspace(0, rate // 2, n_fft // 2 + 1, dtype=torch.float64)
    mels = torch.linspace(float(hz_to_mel(torch.tensor(f_min, dtype=torch.float64))),
                          float(hz_to_mel(torch.tensor(f_max, dtype=torch.float64))), bands + 2,
                          dtype=torch.float64)
    points = mel_to_hz(mels)  # [bands + 2] edges in Hz
    widths = points[1:] - points[:-1]
    offsets = points.unsqueeze(0) - freqs.unsqueeze(1)  # [bins, bands + 2]
    rising = -offsets[:, :-2] / widths[:-1]
    falling = offsets[:, 2:] / widths[1:]
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


def mel_filterbank() -> Tensor:
    """float64 `[257, 64]`: power spectrum (bins) @ filterbank = mel bands."""
    return _filterbank(N_FFT, NUM_BANDS, F_MIN, F_MAX, SAMPLE_RATE).clone()


def mel_power(wave: Tensor) -> Tensor:
    """`[C, n]` float -> power mel spectrogram `[C, 64, 1 + n // 160]` (float32)."""
    window = torch.hann_window(WINDOW, periodic=True, dtype=torch.float32, device=wave.device)
    spec = torch.stft(wave.float(), N_FFT, hop_length=HOP, win_length=WINDOW, window=window,
                      center=True, pad_mode="reflect", return_complex=True)
    power = spec.real ** 2 + spec.imag ** 2  # [C, 257, frames]
    bank = mel_filterbank().to(device=wave.device, dtype=torch.float32)
    return torch.einsum("cft,fm->cmt", power, bank)


def scaled_db(power: Tensor) -> Tensor:
    """20 log10(max(1e-5, x)) / 100 (the authors' `db_from_amp` then `normalize_spec`)."""
    return 20.0 * torch.log10(torch.clamp(power, min=AMIN)) / DB_RANGE


def cavp_log_mel(wave: np.ndarray | Tensor, frames: int = CLIP_FRAMES) -> Tensor:
    """float32 `[C, frames, 64]` of a 16 kHz waveform `[C, n]` (or `[n]`, one channel).

    The STFT runs over the whole wave and keeps its first `frames` frames (a 3 s wave gives 301,
    of which 300 are kept). A wave too short for `frames` frames raises ValueError: crop it first.
    """
    wave = torch.as_tensor(np.asarray(wave, dtype=np.float32) if isinstance(wave, np.ndarray) else wave)
    wave = wave.unsqueeze(0) if wave.dim() == 1 else wave
    if wave.dim() != 2:
        raise ValueError(f"waveform must be [channels, samples], got shape {tuple(wave.shape)}")
    available = 1 + wave.shape[-1] // HOP
    if available < frames or wave.shape[-1] <= N_FFT // 2:
        raise ValueError(f"{wave.shape[-1]} samples give {available} STFT frames, {frames} are needed")
    power = mel_power(wave)[:, :, :frames]
    return scaled_db(power).transpose(1, 2).contiguous()


def clip_log_mel(wave: np.ndarray | Tensor, seconds: float = CLIP_SECONDS) -> Tensor:
    """VPO: the crop of `seconds` (centre, tiled when shorter) -> `[C, 300, 64]` for 3 s."""
    length = int(seconds * SAMPLE_RATE)
    frames = CHUNK_FRAMES if seconds == 1.0 else CLIP_FRAMES
    return cavp_log_mel(crop(wave, length), frames)


def avss_chunks(wave: np.ndarray | Tensor, seconds: int = AVSS_SECONDS) -> Tensor:
    """AVSS: channel mean, the 10 s crop, ten 1 s chunks -> `[10, 1, 96, 64]`."""
    wave = torch.as_tensor(wave, dtype=torch.float32)
    wave = wave.unsqueeze(0) if wave.dim() == 1 else wave
    mono = crop(wave.mean(dim=0, keepdim=True), seconds * SAMPLE_RATE)  # [1, seconds * rate]
    chunks = mono.reshape(seconds, SAMPLE_RATE)  # chunk i = second i
    return cavp_log_mel(chunks, CHUNK_FRAMES).unsqueeze(1)


def channels_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Samples `[n]` or `[n, C]` (float or integer PCM) at `rate` -> float32 `[C, n_16k]`: every
    channel kept and resampled on its own (soxr, as `avseg.audio.to_mono_16k`)."""
    import soxr

    from avseg.audio.logmel import RESAMPLER_QUALITY, _to_float

    wave = _to_float(np.asarray(samples))
    wave = wave[:, None] if wave.ndim == 1 else wave
    if wave.ndim != 2:
        raise ValueError(f"audio must be [samples] or [samples, channels], got shape {tuple(wave.shape)}")
    if int(rate) != SAMPLE_RATE and wave.size:
        wave = soxr.resample(np.ascontiguousarray(wave), int(rate), SAMPLE_RATE, quality=RESAMPLER_QUALITY)
        wave = wave[:, None] if wave.ndim == 1 else wave
    return np.ascontiguousarray(wave.T, dtype=np.float32)


def load_channels_16k(path) -> np.ndarray:
    """An audio file -> float32 `[C, n]` at 16 kHz, every channel kept (`channels_16k`; the
    authors use torchaudio's Resample)."""
    from avseg.audio.io import load_audio

    samples, rate = load_audio(path)  # [n, C]; AudioError (a UserError) names the file
    return channels_16k(samples, rate)
