"""The audio each sampled frame gets at predict time: the config's front end (`audio.frontend`),
made from the frame's window of 16 kHz audio as the evaluation readers make it.

    rule = audio_rule(config)
    wave = rule.waveform(samples, 44100)          # [n] mono (vggish) or [C, n] (cavp), 16 kHz
    feats = rule.features(rule.cut(wave, start))  # what the model takes for one frame

- "vggish" (default; QSD, TPAVI): the 0.975 s from the frame's time, mono, one VGGish log-mel
  example `[96, 64]` (the 1 s window also feeds the TD separator).
- CAVP front end on AVSS / `single_plus` (`cavp_chunk`): the 1 s from the frame's time,
  resampled channel by channel then averaged (as `avss_chunks` of `load_channels_16k`),
  zero-padded outside the track: `[1, 96, 64]`, chunk t of a 10 s clip when the frame is at t s.
- CAVP front end on VPO / `single_plus_cavp` (`cavp_clip`): the 3 s from the frame's time,
  channels kept; where the track ends sooner, what there is is tiled by the authors' crop rule
  (`cavp_frontend.crop`, as Single+ does with a wav under 3 s), no audio at all is silence:
  `[C, 300, 64]`. Single+ computes the spectrogram of the whole wav and keeps its first 300
  frames, so its last frame sees the 256 samples after the 3 s (`tail`); VPO crops its 3 s
  first (the last frame is reflect-padded): the window ends where the reader's does. C is the model's `model.cavp.audio_channels`: a track with C channels keeps
  them; a 1-channel model gets the channel mean; a mono track on a 2-channel model gets both
  channels at half amplitude (a source in the middle, VPO's stereo rule with audio_pos 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from avseg.audio import cavp_frontend as cavp
from avseg.audio.logmel import (MIN_SAMPLES_PER_EXAMPLE, NUM_BANDS, NUM_FRAMES, SAMPLE_RATE, check_waveform, to_mono_16k,
                                vggish_log_mel)
from avseg.config import Config
from avseg.data.build import audio_frontend
from avseg.data.datasets import is_binary, is_image_dataset
from avseg.errors import UserError
from avseg.inference.records import cut_wave

KINDS = ("vggish", "cavp_chunk", "cavp_clip")
SECOND = SAMPLE_RATE


@dataclass(frozen=True)
class AudioRule:
    """kind: one of `KINDS`; channels: the channels the model takes (`cavp_clip`); tail: samples
    after the 3 s that the reader's last STFT frame sees (`cavp_clip`)."""

    kind: str = "vggish"
    channels: int = 1
    tail: int = 0

    @property
    def clip(self) -> int:
        """16 kHz samples of the audio input proper (3 s for `cavp_clip`, else 1 s)."""
        return int(cavp.CLIP_SECONDS * SAMPLE_RATE) if self.kind == "cavp_clip" else SECOND

    @property
    def samples(self) -> int:
        """16 kHz samples a frame's window holds, from the frame's time on."""
        return self.clip + self.tail

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One frame's audio input, as `features` makes it."""
        if self.kind == "vggish":
            return (NUM_FRAMES, NUM_BANDS)
        if self.kind == "cavp_chunk":
            return (1, cavp.CHUNK_FRAMES, cavp.NUM_BANDS)
        return (self.channels, cavp.CLIP_FRAMES, cavp.NUM_BANDS)

    @property
    def keeps_channels(self) -> bool:
        """The CAVP front end resamples each channel before mixing (as its readers)."""
        return self.kind != "vggish"

    @property
    def trims_end(self) -> bool:
        """A window at the end of the track holds only the samples there are (then tiled)."""
        return self.kind == "cavp_clip"

    def describe(self) -> str:
        """predictions.json's "sampling.audio"."""
        if self.kind == "vggish":
            return "16 kHz mono, the 0.975 s starting at each frame's time"
        if self.kind == "cavp_chunk":
            return "16 kHz, channel mean, the 1 s starting at each frame's time (CAVP front end)"
        return (f"16 kHz, {self.channels} channel(s), the 3 s starting at each frame's time, tiled "
                "where the track ends sooner (CAVP front end)")

    def waveform(self, samples: np.ndarray | None, rate: int) -> np.ndarray:
        """A clip's audio `[n]` or `[n, channels]` at `rate` (None: silence) at 16 kHz: mono
        float32 `[n]` (vggish) or float32 `[C, n]` (CAVP front end)."""
        if not self.keeps_channels:
            return np.zeros(0, np.float32) if samples is None else to_mono_16k(samples, rate).astype(np.float32)
        if samples is None:
            return np.zeros((1, 0), np.float32)
        return cavp.channels_16k(check_waveform(samples, rate), int(rate))

    def cut(self, wave: np.ndarray, start: int) -> np.ndarray:
        """The window of a frame whose time is sample `start` of a 16 kHz `waveform(...)`."""
        if not self.keeps_channels:
            return cut_wave(wave, start, SECOND)
        if self.trims_end:
            end = min(start + self.samples, wave.shape[1])
            lead = np.zeros((wave.shape[0], max(-start, 0)), np.float32)
            return np.concatenate([lead, wave[:, max(start, 0):max(end, 0)]], axis=1)
        return np.stack([cut_wave(channel, start, self.samples) for channel in wave])

    def features(self, window: np.ndarray, source: str = "the audio") -> np.ndarray:
        """The model's audio input for one frame from its window (`[n]` mono or `[C, n]`)."""
        if self.kind == "vggish":
            return vggish_log_mel(window[:MIN_SAMPLES_PER_EXAMPLE], SAMPLE_RATE, num_examples=1)[0]
        wave = torch.from_numpy(np.ascontiguousarray(window, dtype=np.float32))
        wave = wave.unsqueeze(0) if wave.dim() == 1 else wave
        if self.kind == "cavp_chunk":
            return cavp.cavp_log_mel(wave.mean(dim=0, keepdim=True), cavp.CHUNK_FRAMES).numpy()
        wave = self._fit_channels(wave, source)
        if wave.shape[1] == 0:
            wave = wave.new_zeros((wave.shape[0], self.clip))
        elif wave.shape[1] < self.clip:
            wave = cavp.crop(wave, self.clip, "authors")
        return cavp.cavp_log_mel(wave, cavp.CLIP_FRAMES).numpy()

    def separator_wave(self, window: np.ndarray) -> np.ndarray:
        """The TD separator's mono second `[16000]` from a frame's window."""
        if not self.keeps_channels:
            return window
        return cut_wave(np.asarray(window, np.float32).reshape(-1, window.shape[-1]).mean(axis=0), 0, SECOND)

    def _fit_channels(self, wave: torch.Tensor, source: str) -> torch.Tensor:
        have = wave.shape[0]
        if have == self.channels:
            return wave
        if self.channels == 1:
            return wave.mean(dim=0, keepdim=True)
        if have == 1 and self.channels == 2:
            return torch.cat([wave * 0.5, wave * 0.5])
        raise UserError(f"{source}: {have} audio channels, the model takes {self.channels} "
                        "(model.cavp.audio_channels); give it mono or that many channels")


def audio_rule(config: Config) -> AudioRule:
    """The predict-time audio rule of a config (module docstring)."""
    if audio_frontend(config) == "vggish":
        return AudioRule()
    if is_binary(config.data.dataset):
        raise UserError(f"audio.frontend 'cavp' is for AVSS, Single+ and VPO; {config.data.dataset} reads VGGish log-mels")
    if not is_image_dataset(config.data.dataset):
        return AudioRule("cavp_chunk")
    channels = 1
    if config.model.name == "cavp" and config.model.cavp.audio_network == "resnet18":
        channels = config.model.cavp.audio_channels
    tail = cavp.N_FFT // 2 if config.data.dataset == "single_plus_cavp" else 0
    return AudioRule("cavp_clip", channels, tail)
