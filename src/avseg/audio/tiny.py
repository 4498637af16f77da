"""The tiny audio encoder of the CPU configs, and loading its `avseg pretrain-audio` weights.

Not part of the paper: configs for real data use VGGish (`avseg.audio.vggish`).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import Tensor, nn

from avseg.errors import UserError


class TinyAudioEncoder(nn.Module):
    """A small CNN over the VGGish log-mel `[N, 96, 64]` -> `[N, 128]`, for CPU-sized synthetic runs.

    Not part of the paper: configs for real data use VGGish.
    """

    def __init__(self, out_dim: int = 128, width: int = 32):
        super().__init__()
        layers, channels = [], 1
        for out_channels in (width // 2, width, width * 2, width * 2):
            layers += [nn.Conv2d(channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels * 2, out_dim)
        self.tokens_dim = channels

    def forward(self, log_mel: Tensor) -> Tensor:
        return self.embed(self.feature_map(log_mel))

    def feature_map(self, log_mel: Tensor) -> Tensor:
        """The time-frequency map `[N, 64, 6, 4]` (time x frequency) of the log-mel."""
        return self.features(log_mel.reshape(-1, 1, 96, 64))

    def embed(self, feature_map: Tensor) -> Tensor:
        """`[N, C, 6, 4]` -> `[N, out_dim]` (mean and max pooled, then linear)."""
        return self.head(torch.cat([feature_map.mean(dim=(2, 3)), feature_map.amax(dim=(2, 3))], dim=-1))


def load_tiny_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load `avseg pretrain-audio` output into a `TinyAudioEncoder`; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: audio.tiny_weights file not found (write one with avseg pretrain-audio)")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        state = saved["state_dict"]
        encoder.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError, EOFError, OSError, pickle.UnpicklingError) as err:
        raise UserError(f"{path}: not a tiny audio encoder written by avseg pretrain-audio ({err})") from None
