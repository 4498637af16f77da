"""Readers of AVSBench-Object: single source (S4) and multiple sources (MS3).

Both read the official release as it is laid out (paths: `avseg.data.layouts`) and return one
`Sample` per clip: 5 frames at 1 fps, ImageNet-normalised and resized to `image_size`; one
VGGish log-mel example per frame computed from the clip's wav; binary ground truth (any non-zero
mask pixel = sounding object = class 1). S4 train clips have ground truth on their first frame
only (`label_present = [1, 0, 0, 0, 0]`); S4 val/test and every MS3 clip on all five.

The official release also ships precomputed log-mels as pickles (`audio_log_mel/*.pkl`). Unpickling
a file can run arbitrary code, so they are read only with the explicit opt-in
`use_log_mel_pkl=True`, with a warning, and even then through a restricted unpickler that only
rebuilds plain tensors. By default the log-mel is computed from the wav.

This module also holds the small file readers that `avss.py` shares, and `build_dataset`.
"""

from __future__ import annotations

import io
import pickle
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from avseg.data import layouts
from avseg.data.layouts import ClipFiles, LayoutError
from avseg.data.problems import error_reason, relative
from avseg.data.sample import SOUNDING, Sample, targets_from_semantic
from avseg.data.transforms import (
    ClipTransform, content_size, eval_transform, native_semantic, to_normalized_tensor, train_transform,
)
from avseg.errors import UserError

SAMPLE_RATE = 16_000  # Sample.waveform is mono at 16 kHz
SHORT_AUDIO_SLACK = 0.5  # seconds a wav may lack before the padding with silence is warned about
LOG_MEL_SHAPE = (96, 64)
PKL_WARNING = (
    "use_log_mel_pkl=True: reading the release's pickled log-mels (audio_log_mel/*.pkl). Pickle "
    "files can run code when loaded; only use files you trust. They are read with a restricted "
    "unpickler that accepts plain tensors only."
)


# ----------------------------------------------------------------------------- file readers


def _without_root(message: str, root: Path) -> str:
    """Rewrite absolute paths under `root` in an error message as root-relative paths."""
    return message.replace(f"{Path(root)}/", "").replace(str(Path(root)), ".")


def _require_file(path: Path, root: Path, what: str) -> None:
    if not Path(path).is_file():
        raise UserError(
            f"{relative(path, root)}: missing {what}; `avseg check-data` lists every missing or "
            "damaged file of the data set"
        )


def read_image(path: Path, root: Path) -> Image.Image:
    """Open and fully decode an image file; UserError naming the file if it is missing/damaged."""
    _require_file(path, root, "image")
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except Exception as err:  # PIL raises many types for damaged files
        raise UserError(f"{relative(path, root)}: cannot decode image ({error_reason(err, path)})") from err


def binary_mask_image(image: Image.Image) -> Image.Image:
    """Any-mode mask -> mode "L" image holding 1 where any colour channel is non-zero, else 0.

    Palette images count their palette index (index 0 = background), as the MS3 reference does;
    an alpha channel is ignored.
    """
    array = np.asarray(image)
    if image.mode in ("LA", "PA", "RGBA", "La", "RGBa"):
        array = array[..., :-1]
    foreground = array.any(axis=-1) if array.ndim == 3 else array != 0
    return Image.fromarray(foreground.astype(np.uint8), mode="L")


def read_audio(
    path: Path, root: Path, num_examples: int, *, log_mel: bool = True, waveform: bool = False
) -> tuple[Tensor | None, Tensor | None]:
    """Read a clip's wav once; return (log-mel `[num_examples, 96, 64]`, mono 16 kHz `[samples]`).

    The log-mel has one VGGish example per second (example i = second i), padded or truncated to
    `num_examples` by `avseg.audio.vggish_log_mel`. A wav at least half a second shorter than
    the clip is padded with silence and named in a warning (`SHORT_AUDIO_SLACK`).
    """
    from avseg.audio import load_audio, vggish_log_mel

    _require_file(path, root, "audio file")
    try:
        samples, sample_rate = load_audio(path)
    except Exception as err:
        raise UserError(f"{relative(path, root)}: cannot read audio ({error_reason(err, path)})") from err
    # load_audio returns float32 [samples, channels] and refuses files without samples
    seconds = samples.shape[0] / sample_rate
    if num_examples and seconds <= num_examples - SHORT_AUDIO_SLACK:
        warnings.warn(f"{relative(path, root)}: {seconds:.2f} s of audio for a {num_examples} s clip; "
                      "the rest is padded with silence", stacklevel=2)
    mel = None
    if log_mel:
        mel = torch.from_numpy(np.ascontiguousarray(vggish_log_mel(samples, sample_rate, num_examples=num_examples)))
    mono = None
    if waveform:
        from avseg.audio import to_mono_16k

        mono = torch.from_numpy(np.ascontiguousarray(to_mono_16k(samples, sample_rate), dtype=np.float32))
    return mel, mono


class _TensorOnlyUnpickler(pickle.Unpickler):
    """Unpickles a plain torch tensor and nothing else (no other callable can be named)."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            from torch._utils import _rebuild_tensor_v2

            return _rebuild_tensor_v2
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            # torch's own helper would call torch.load(weights_only=False); this one does not
            return lambda data: torch.load(io.BytesIO(data), weights_only=True)
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain tensors are accepted")


def read_log_mel_pkl(path: Path, root: Path, num_examples: int = layouts.AVSBENCH_FRAMES) -> Tensor:
    """The release's precomputed log-mel (pickled tensor `[5, 1, 96, 64]`) -> `[5, 96, 64]`.

    Pickle can run code: callers must have opted in (`use_log_mel_pkl=True`).
    """
    _require_file(path, root, "log-mel pickle")
    try:
        with open(path, "rb") as handle:
            value = _TensorOnlyUnpickler(handle).load()
    except Exception as err:
        raise UserError(f"{relative(path, root)}: cannot read the log-mel pickle ({err})") from err
    if not isinstance(value, Tensor):
        raise UserError(f"{relative(path, root)}: expected a pickled tensor, found {type(value).__name__}")
    value = value.detach().to(torch.float32)
    if value.dim() == 4 and value.shape[1] == 1:
        value = value[:, 0]
    if value.dim() != 3 or tuple(value.shape[1:]) != LOG_MEL_SHAPE or value.shape[0] != num_examples:
        raise UserError(
            f"{relative(path, root)}: log-mel has shape {tuple(value.shape)}, expected "
            f"[{num_examples}, 1, 96, 64]"
        )
    return value.contiguous()


# ----------------------------------------------------------------------------- shared helpers


def list_split_clips(
    root: Path, layout: str, split: str, subsets: tuple[str, ...] | None = None
) -> list[ClipFiles]:
    """The clips of one split, with layout errors turned into UserErrors naming the csv."""
    if split not in layouts.SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {', '.join(layouts.SPLITS)}")
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: data set folder not found")
    try:
        clips = layouts.list_clips(root, layout, split=split, subsets=subsets)
    except LayoutError as err:
        raise UserError(_without_root(str(err), root)) from err
    if not clips:
        which = "" if subsets is None else f" in subset(s) {', '.join(subsets)}"
        raise UserError(
            f"{relative(layouts.metadata_path(root, layout), root)}: no clips with split {split!r}{which}"
        )
    return clips


def pick_transform(
    layout: str, split: str, image_size: int, train_transforms: ClipTransform | None, resize: str = "square"
) -> ClipTransform:
    """Training split: `train_transforms` or the reference's; val/test: the `resize` of `eval_transform`."""
    if split != "train":
        return eval_transform(image_size, resize)
    if train_transforms is None:
        return train_transform(layout, image_size)
    if train_transforms.size != image_size:
        raise ValueError(f"train_transforms.size ({train_transforms.size}) differs from image_size ({image_size})")
    return train_transforms


def longest_side_labels(transform: ClipTransform, frames: list[Image.Image], ids: list, slots: int) -> dict:
    """`Sample` fields of longest-side evaluation: labels at their own size and the content size."""
    if transform.crop or transform.resize != "longest_side":
        return {}
    return {"native_semantic": native_semantic(frames, ids, slots),
            "content_size": content_size(*frames[0].size, transform.size)}


def frames_tensor(frames: list[Image.Image], slots: int) -> Tensor:
    """Normalised frames `[slots, 3, H, W]`; slots past the real frames are zeros."""
    real = torch.stack([to_normalized_tensor(frame) for frame in frames])
    if slots == real.shape[0]:
        return real
    padded = torch.zeros((slots, *real.shape[1:]), dtype=real.dtype)
    padded[: real.shape[0]] = real
    return padded


def pad_examples(log_mel: Tensor, slots: int) -> Tensor:
    """`[N, 96, 64]` -> `[slots, 96, 64]` with zero examples appended."""
    if log_mel.shape[0] == slots:
        return log_mel
    padded = torch.zeros((slots, *log_mel.shape[1:]), dtype=torch.float32)
    padded[: log_mel.shape[0]] = log_mel[:slots]
    return padded


def split_targets(semantic: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Per-frame masks `[N_t, H, W]` and labels `[N_t]` from a class-id map `[T, H, W]`."""
    pairs = [targets_from_semantic(frame) for frame in semantic]
    return [masks for masks, _ in pairs], [labels for _, labels in pairs]


# ----------------------------------------------------------------------------- S4 / MS3


class _AVSBenchObjectDataset(Dataset):
    """Common reader of S4 and MS3: 5 frames, binary masks, log-mel from the wav (or pkl)."""

    layout = ""

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        image_size: int = 224,
        train_transforms: ClipTransform | None = None,
        use_log_mel_pkl: bool = False,
        load_waveform: bool = False,
        resize: str = "square",
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.image_size = image_size
        self.use_log_mel_pkl = use_log_mel_pkl
        self.load_waveform = load_waveform
        self.transform = pick_transform(self.layout, split, image_size, train_transforms, resize)
        self.clips = list_split_clips(self.root, self.layout, split)
        if use_log_mel_pkl:
            warnings.warn(PKL_WARNING, UserWarning, stacklevel=2)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> Sample:
        """One clip: frames `[5, 3, S, S]`, log_mel `[5, 96, 64]`, semantic `[5, S, S]` (0/1)."""
        clip = self.clips[index]
        frames = [read_image(path, self.root) for path in clip.frames]
        masks = [None if path is None else binary_mask_image(read_image(path, self.root)) for path in clip.masks]
        native = longest_side_labels(self.transform, frames, [
            None if m is None else (np.asarray(m) != 0).astype(np.int64) * SOUNDING for m in masks], len(frames))
        frames, masks = self.transform(frames, masks)
        count = len(frames)
        semantic = torch.zeros((count, self.image_size, self.image_size), dtype=torch.int64)
        for t, mask in enumerate(masks):
            if mask is not None:
                semantic[t] = torch.from_numpy(np.asarray(mask) != 0).to(torch.int64) * SOUNDING
        log_mel = waveform = None
        if self.load_waveform or not self.use_log_mel_pkl:
            log_mel, waveform = read_audio(
                clip.audio, self.root, count, log_mel=not self.use_log_mel_pkl, waveform=self.load_waveform
            )
        if self.use_log_mel_pkl:
            log_mel = read_log_mel_pkl(clip.log_mel_pkl, self.root, count)
        target_masks, target_labels = split_targets(semantic)
        return Sample(
            frames=frames_tensor(frames, count),
            log_mel=log_mel,
            semantic=semantic,
            masks=target_masks,
            labels=target_labels,
            frame_present=torch.ones(count, dtype=torch.bool),
            label_present=torch.tensor([mask is not None for mask in masks], dtype=torch.bool),
            clip_id=clip.clip_id,
            dataset=self.layout,
            subset=None,
            category=clip.category,
            waveform=waveform,
            **native,
        )


class S4Dataset(_AVSBenchObjectDataset):
    """AVSBench-Object single source (S4). ROOT = the `Single-source` folder.

    Train clips label frame 1 only (`label_present = [1, 0, 0, 0, 0]`, semantic zeros elsewhere);
    val/test clips label all 5 frames. `category` is the csv's category column.

    Args:
        root: data set folder (holds `s4_meta_data.csv`).
        split: "train", "val" or "test".
        image_size: frames and masks are resized to `image_size x image_size`.
        train_transforms: transform of the train split (default: square resize, no flip).
        resize: evaluation resize of val / test: "square" or "longest_side" (`data.resize`).
        use_log_mel_pkl: read `audio_log_mel/*.pkl` instead of computing the log-mel from the
            wav. Unpickling can run code: opt in only for files you trust (warns).
        load_waveform: also return the mono 16 kHz waveform in `Sample.waveform`.
    """

    layout = "s4"


class MS3Dataset(_AVSBenchObjectDataset):
    """AVSBench-Object multiple sources (MS3). ROOT = the `Multi-sources` folder.

    All 5 frames of every clip are labelled. Arguments as `S4Dataset`.
    """

    layout = "ms3"


# ----------------------------------------------------------------------------- builder
