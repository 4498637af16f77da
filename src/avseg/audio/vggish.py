"""VGGish network (log-mel examples -> 128-d embeddings) and loading its public weights.

The module layout matches the PyTorch port (harritaylor/torchvggish, also vendored by AVSBench)
so its released state dict ``vggish-10086976.pth`` loads without renaming:

    features.0   Conv2d(1, 64, 3, padding=1)     features.8   Conv2d(256, 256, 3, padding=1)
    features.1   ReLU                            features.9   ReLU
    features.2   MaxPool2d(2)                    features.10  MaxPool2d(2)
    features.3   Conv2d(64, 128, 3, padding=1)   features.11  Conv2d(256, 512, 3, padding=1)
    features.4   ReLU                            features.12  ReLU
    features.5   MaxPool2d(2)                    features.13  Conv2d(512, 512, 3, padding=1)
    features.6   Conv2d(128, 256, 3, padding=1)  features.14  ReLU
    features.7   ReLU                            features.15  MaxPool2d(2)
    embeddings.0 Linear(12288, 4096), .1 ReLU, .2 Linear(4096, 4096), .3 ReLU,
    embeddings.4 Linear(4096, 128), .5 ReLU   (the port keeps a ReLU on the embedding)

PCA whitening / 8-bit quantisation (the port's ``Postprocessor``) is not implemented: AVS
methods use the raw embedding (``POSTPROCESS_LOG_MEL_WITH_PCA = False`` in AVSBench).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from avseg.errors import UserError

from .logmel import NUM_BANDS, NUM_FRAMES

EMBEDDING_SIZE = 128
WEIGHTS_FILENAME = "vggish-10086976.pth"
_CONV_CHANNELS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")
_FLAT_FEATURES = 512 * (NUM_FRAMES // 16) * (NUM_BANDS // 16)  # 512 * 6 * 4 = 12288
_MAX_KEYS_SHOWN = 20  # VGGish has 18 tensors: missing keys are always listed in full

logger = logging.getLogger(__name__)


def _make_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    in_channels = 1
    for item in _CONV_CHANNELS:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, int(item), kernel_size=3, padding=1), nn.ReLU()]
            in_channels = int(item)
    return nn.Sequential(*layers)


class VGGish(nn.Module):
    """VGGish: log-mel examples ``[N, 96, 64]`` or ``[N, 1, 96, 64]`` -> embeddings ``[N, 128]``.

    Random initialisation as built; use :func:`load_vggish` for the released weights.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = _make_features()
        self.embeddings = nn.Sequential(
            nn.Linear(_FLAT_FEATURES, 4096),
            nn.ReLU(),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Linear(4096, EMBEDDING_SIZE),
            nn.ReLU(),
        )

    tokens_dim = 512  # channels of the time-frequency map (`feature_map`)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        """``[N, 96, 64]`` or ``[N, 1, 96, 64]`` log-mel -> ``[N, 128]`` embeddings (>= 0)."""
        return self.embed(self.feature_map(log_mel))

    def feature_map(self, log_mel: torch.Tensor) -> torch.Tensor:
        """The convolutional time-frequency map ``[N, 512, 6, 4]`` (time x frequency) of the log-mel."""
        if log_mel.dim() == 3:
            log_mel = log_mel.unsqueeze(1)
        if log_mel.dim() != 4 or tuple(log_mel.shape[1:]) != (1, NUM_FRAMES, NUM_BANDS):
            raise ValueError(
                f"VGGish expects log-mel [N, {NUM_FRAMES}, {NUM_BANDS}] or "
                f"[N, 1, {NUM_FRAMES}, {NUM_BANDS}]; got {tuple(log_mel.shape)}"
            )
        return self.features(log_mel)

    def embed(self, feature_map: torch.Tensor) -> torch.Tensor:
        """``feature_map`` ``[N, 512, 6, 4]`` -> ``[N, 128]`` embeddings."""
        # TensorFlow flattens channels-last: (H, W, C) order.
        flat = feature_map.permute(0, 2, 3, 1).flatten(1)  # [N, 12288]
        return self.embeddings(flat)


def _key_list(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_KEYS_SHOWN])
    more = len(keys) - _MAX_KEYS_SHOWN
    return shown + (f" (and {more} more)" if more > 0 else "")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "was not found"
        raise UserError(
            f"VGGish weights {path}: {what}; download {WEIGHTS_FILENAME} from the torchvggish "
            "release and set the path to the local file"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged / foreign files
        raise UserError(
            f"VGGish weights {path}: could not be read as a PyTorch state dict "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise UserError(
            f"VGGish weights {path}: expected a state dict (names -> tensors), "
            f"got {type(state).__name__}"
        )
    return state


def _check_keys(path: Path, model: VGGish, state: dict[str, torch.Tensor], strict: bool) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if wrong_shape:
        raise UserError(
            f"VGGish weights {path}: tensors of the wrong shape: {_key_list(wrong_shape)}"
        )
    if not (missing or unexpected):
        return
    detail = f"missing keys: {_key_list(missing) or 'none'}; unexpected keys: " + (
        _key_list(unexpected) or "none"
    )
    if strict or not any(k in state for k in expected):
        raise UserError(
            f"VGGish weights {path}: not a VGGish state dict ({detail}); expected the "
            f"torchvggish layout features.*/embeddings.* of {WEIGHTS_FILENAME}"
        )
    logger.warning("VGGish weights %s loaded with strict=False: %s", path, detail)


def load_vggish(path: str | Path | None, *, strict: bool = True) -> VGGish:
    """Build VGGish and load the public ``vggish-10086976.pth`` state dict from ``path``.

    Args:
        path: local weight file (keys ``features.*``, ``embeddings.*``), or None for random
            initialisation (warns loudly: the audio features mean nothing then).
        strict: when False, missing / unexpected keys are logged instead of raising
            (at least one key must match; shapes must always match).

    Returns:
        VGGish on the CPU, in training mode, every parameter trainable; freeze it with
        ``model.requires_grad_(False).eval()`` if wanted.

    Raises:
        UserError: the file is missing, unreadable, or holds the wrong keys or shapes.
    """
    if path is None:
        message = (
            "VGGish has no weights (path=None): it is randomly initialised and the audio "
            f"features are meaningless until the real weights ({WEIGHTS_FILENAME}) are given"
        )
        logger.warning(message)
        warnings.warn(message, UserWarning, stacklevel=2)
        return VGGish()
    path = Path(path).expanduser()
    state = _read_state_dict(path)  # before building the model: fail fast on a bad file
    model = VGGish()
    _check_keys(path, model, state, strict)
    model.load_state_dict(state, strict=strict)
    return model
