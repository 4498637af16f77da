"""Row 2 of Table 2 ("+ TD"): separate the audio into sources first, run the baseline per source.

A separator is any callable `(waveform [samples] float32 at 16 kHz) -> [S, samples]`. The one
shipped here is classical: non-negative matrix factorisation (scikit-learn) of the magnitude
spectrogram, one group of NMF components per source, and soft (Wiener-like) masks on the complex
STFT. Separators are named from a closed registry (`SEPARATORS`: "nmf"). Users plug their own (a
neural one, say) with `model.qsd.separator=package.module:factory`, where `factory(num_sources)`
returns such a callable, but only from a config they pass on the command line with
`--allow-import` (`build_separator(..., allow_import=True)`): a checkpoint never names code.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Callable

import numpy as np
import torch
from scipy.signal import istft, stft
from sklearn.cluster import KMeans
from sklearn.decomposition import NMF
from torch import Tensor, nn

from avseg.errors import UserError

Separator = Callable[[np.ndarray], np.ndarray]
SAMPLE_RATE = 16000


class NMFSeparator:
    """Split a mono 16 kHz waveform into `num_sources` sources.

    The magnitude STFT V is factorised as W H with `num_sources * components_per_source`
    components; components are grouped into sources by k-means on their (normalised) spectral
    templates, and each source gets the soft mask (W_s H_s) / (W H) applied to the complex STFT.
    """

    def __init__(self, num_sources: int = 2, components_per_source: int = 2, n_fft: int = 512,
                 hop: int = 160, max_iter: int = 200, seed: int = 0):
        if num_sources < 1:
            raise ValueError("num_sources must be >= 1")
        self.num_sources, self.components = num_sources, components_per_source
        self.n_fft, self.hop, self.max_iter, self.seed = n_fft, hop, max_iter, seed

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        """waveform `[samples]` -> sources `[num_sources, samples]` (they sum to ~ the input)."""
        waveform = np.asarray(waveform, dtype=np.float64)
        samples = waveform.shape[0]
        if self.num_sources == 1 or samples < self.n_fft or not np.any(waveform):
            return np.broadcast_to(waveform, (self.num_sources, samples)).astype(np.float32) / self.num_sources
        _, _, spectrum = stft(waveform, nperseg=self.n_fft, noverlap=self.n_fft - self.hop, boundary="even")
        magnitude = np.abs(spectrum) + 1e-10
        n_components = self.num_sources * self.components
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings on short clips are expected
            model = NMF(n_components=n_components, init="nndsvda", max_iter=self.max_iter, random_state=self.seed)
            templates = model.fit_transform(magnitude)  # W [F, n]
        activations = model.components_  # H [n, frames]
        groups = self._group(templates)
        total = templates @ activations + 1e-10
        sources = []
        for source in range(self.num_sources):
            members = groups == source
            mask = (templates[:, members] @ activations[members]) / total
            _, estimate = istft(spectrum * mask, nperseg=self.n_fft, noverlap=self.n_fft - self.hop, boundary=True)
            sources.append(_fit_length(estimate, samples))
        return np.stack(sources).astype(np.float32)

    def _group(self, templates: np.ndarray) -> np.ndarray:
        """Assign each NMF component to one of the sources (k-means over spectral shapes)."""
        normalised = templates.T / (np.linalg.norm(templates.T, axis=1, keepdims=True) + 1e-10)
        if normalised.shape[0] <= self.num_sources:
            return np.arange(normalised.shape[0])
        kmeans = KMeans(n_clusters=self.num_sources, n_init=4, random_state=self.seed).fit(normalised)
        return kmeans.labels_


def _fit_length(signal: np.ndarray, samples: int) -> np.ndarray:
    if signal.shape[0] >= samples:
        return signal[:samples]
    return np.pad(signal, (0, samples - signal.shape[0]))


SEPARATORS: dict[str, Callable[[int], Separator]] = {"nmf": lambda num_sources: NMFSeparator(num_sources=num_sources)}


def is_import_path(name: str) -> bool:
    """True for "package.module:factory" (code to import), False for a registry name."""
    return ":" in name


def build_separator(name: str, num_sources: int, *, allow_import: bool = False) -> Separator:
    """A registry name ("nmf"), or "package.module:factory" when `allow_import` (the user's own config
    given with --allow-import); anything else is a UserError and nothing is imported."""
    if name in SEPARATORS:
        return SEPARATORS[name](num_sources)
    if not is_import_path(name):
        raise UserError(f"model.qsd.separator '{name}': expected one of {', '.join(SEPARATORS)} "
                        "(or package.module:factory with --allow-import)")
    if not allow_import:
        raise UserError(f"model.qsd.separator '{name}' is an import path: code is imported only from a config "
                        "you pass on the command line with --allow-import")
    module_name, _, attribute = name.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise UserError(f"model.qsd.separator '{name}': cannot import it ({err})") from None
    return factory(num_sources)


class SeparateThenSegment(nn.Module):
    """Row 2: run `baseline` once per separated source and pool the candidates of all sources.

    Each source gives K candidates per frame; the S*K candidates are concatenated so the matcher
    and the mask merge treat them as one set ("masks combined").
    """

    def __init__(self, baseline: nn.Module, separator: Separator, num_sources: int):
        super().__init__()
        self.baseline, self.separator, self.num_sources = baseline, separator, num_sources

    def source_log_mels(self, waveform: Tensor, num_frames: int) -> Tensor:
        """waveform `[B, samples]` (16 kHz) -> log-mel of every source `[S, B, T, 96, 64]`."""
        from avseg.audio import vggish_log_mel

        per_clip = []
        for clip in waveform.detach().cpu().numpy():
            sources = self.separator(clip)
            per_clip.append(np.stack([vggish_log_mel(s, SAMPLE_RATE, num_examples=num_frames) for s in sources]))
        return torch.from_numpy(np.stack(per_clip, axis=1)).to(waveform.device)

    def forward(self, frames: Tensor, log_mel: Tensor, frame_present: Tensor | None = None,
                waveform: Tensor | None = None) -> dict:
        """As QSD.forward, plus the waveform `[B, samples]` at 16 kHz that is separated."""
        if waveform is None:
            raise UserError("the TD ablation (row 2) needs the waveform: set data.load_waveform=true")
        outputs = [self.baseline(frames, mel, frame_present) for mel in self.source_log_mels(waveform, frames.shape[1])]
        return _concatenate_candidates(outputs)


def _concatenate_candidates(outputs: list[dict]) -> dict:
    keys = ("pred_logits", "pred_boxes", "pred_masks")
    merged = {key: torch.cat([o[key] for o in outputs], dim=1) for key in keys}
    merged["aux_outputs"] = [
        {key: torch.cat([o["aux_outputs"][i][key] for o in outputs], dim=1) for key in keys}
        for i in range(len(outputs[0]["aux_outputs"]))
    ]
    merged["vq"] = {}
    return merged
