"""A recording stand-in model for the Predictor's value tests (test_predictor_values.py,
test_predictor_setup.py), and a Predictor around it."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from avseg import Predictor
from avseg.config import load_config

ROOT = Path(__file__).resolve().parents[2]
TPAVI_CONFIG = ROOT / "configs/cpu/tpavi_r18_synth_s4.yaml"  # binary (S4)
CAVP_CONFIG = ROOT / "configs/cpu/cavp_r18_synth_avss.yaml"
SMALL = ["data.image_size=64"]


class Recorder(nn.Module):
    """Foreground logit of a pixel: 8 x (its normalised red - the frame's mean red). Keeps each call's inputs."""

    def __init__(self, separator: bool = False):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(8.0))
        self.calls: list[dict] = []
        if separator:
            self.separator = nn.Identity()  # the TD wrapper's attribute: the predictor then sends waveforms

    def forward(self, frames, log_mel, frame_present, waveform=None):
        self.calls.append({"frames": frames.clone(), "log_mel": log_mel.clone(), "present": frame_present.clone(),
                           "waveform": None if waveform is None else waveform.clone()})
        red = frames[:, :, 0]
        logits = self.scale * (red - red.mean(dim=(-2, -1), keepdim=True))
        return {"semantic_logits": logits.flatten(0, 1)[:, None]}


def recording_predictor(config=TPAVI_CONFIG, overrides=(), **kwargs) -> Predictor:
    """A CPU Predictor around a new Recorder (`separator=True`: one with a TD separator) for `config`."""
    return Predictor(Recorder(kwargs.pop("separator", False)), load_config(config, [*SMALL, *overrides]),
                     device="cpu", **kwargs)
