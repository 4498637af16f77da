"""Row 2's classical separator (NMF + soft masks) and the separate-then-segment wrapper."""

import numpy as np
import pytest
import torch

from avseg.errors import UserError
from avseg.models.separation import NMFSeparator, SeparateThenSegment, build_separator


def two_sources(seconds: float = 2.0, rate: int = 16000) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(int(seconds * rate)) / rate
    low = sum(np.sin(2 * np.pi * 220 * k * t) / k for k in (1, 2, 3)) * (t < 1.4)
    high = np.sin(2 * np.pi * 3100 * t) * (t > 0.6)
    return low.astype(np.float32), high.astype(np.float32)


def test_nmf_recovers_two_sources():
    low, high = two_sources()
    sources = NMFSeparator(num_sources=2)(low + high)
    assert sources.shape == (2, low.shape[0])
    corr = np.array([[abs(np.corrcoef(s, ref)[0, 1]) for ref in (low, high)] for s in sources])
    best = max(corr[0, 0] + corr[1, 1], corr[0, 1] + corr[1, 0]) / 2
    assert best > 0.9, corr
    assert np.allclose(sources.sum(0), low + high, atol=0.05)  # soft masks partition the mixture


def test_silence_and_single_source():
    assert np.all(NMFSeparator(num_sources=3)(np.zeros(16000)) == 0)
    wave = two_sources()[0]
    assert np.allclose(NMFSeparator(num_sources=1)(wave)[0], wave)


def test_plug_in_separator_by_import_path_only_when_allowed():
    import sys

    sys.modules.pop("tests_plugin_separator", None)
    with pytest.raises(UserError, match="--allow-import"):
        build_separator("tests_plugin_separator:factory", 2)
    assert "tests_plugin_separator" not in sys.modules  # refused before anything was imported
    separator = build_separator("tests_plugin_separator:factory", 2, allow_import=True)
    assert separator(np.ones(10)).shape == (2, 10)
    assert isinstance(build_separator("nmf", 3), NMFSeparator)
    wave = np.linspace(-1, 1, 10, dtype=np.float32)
    assert np.array_equal(separator(wave), np.stack([wave / 2, wave / 2]))  # the plug-in's own output
    with pytest.raises(UserError, match="nmf"):
        build_separator("nonsense", 2)
    with pytest.raises(UserError, match="cannot import"):
        build_separator("no_such_module_xyz:factory", 2, allow_import=True)


class FakeBaseline(torch.nn.Module):
    def forward(self, frames, log_mel, frame_present=None):
        n = frames.shape[0] * frames.shape[1]
        level = log_mel.mean().expand(n, 3, 1)
        out = {"pred_logits": level, "pred_boxes": level.expand(n, 3, 4), "pred_masks": level[..., None].expand(n, 3, 4, 4)}
        out["aux_outputs"] = [dict(out)]
        return out


def test_candidates_of_all_sources_are_pooled():
    low, high = two_sources(seconds=2.0)
    model = SeparateThenSegment(FakeBaseline(), NMFSeparator(num_sources=2), num_sources=2)
    out = model(torch.zeros(1, 2, 3, 8, 8), torch.zeros(1, 2, 96, 64), waveform=torch.from_numpy(low + high)[None])
    assert out["pred_logits"].shape == (2, 6, 1) and out["pred_masks"].shape == (2, 6, 4, 4)
    assert out["aux_outputs"][0]["pred_boxes"].shape == (2, 6, 4)
    # candidates 0-2 come from source 1's log-mel, 3-5 from source 2's (FakeBaseline outputs its mean)
    from avseg.audio import vggish_log_mel

    levels = [float(vggish_log_mel(s, 16000, num_examples=2).mean()) for s in NMFSeparator(num_sources=2)(low + high)]
    assert abs(levels[0] - levels[1]) > 0.1
    for k, level in enumerate(levels):
        for key in ("pred_logits", "pred_masks"):
            assert torch.allclose(out[key][:, 3 * k : 3 * k + 3], torch.tensor(level), atol=1e-4)
            assert torch.allclose(out["aux_outputs"][0][key][:, 3 * k : 3 * k + 3], torch.tensor(level), atol=1e-4)
    with pytest.raises(UserError, match="waveform"):
        model(torch.zeros(1, 2, 3, 8, 8), torch.zeros(1, 2, 96, 64))
