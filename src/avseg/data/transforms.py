"""Frame and mask transforms of the AVSBench readers, as the reference loaders apply them.

Frames are resized with bilinear interpolation, masks with nearest neighbour, so a mask never
gains a value it did not have. Evaluation resizes every image to a `size x size` square
(`resize="square"`, the AVSBench references) or, with `resize="longest_side"` (QSD §4: "all images
are resized to have the longest side 224 during evaluation"), keeps the aspect ratio with the
longest side `size` and pads the bottom / right to `size x size` (frames with the ImageNet mean
colour, about 0 once normalised; masks with background); `content_size` says which top-left part
is the image. AVSS training uses the reference's `crop_resize` (short side to `size`, then a centre
square crop).
An optional horizontal flip (off by default; the references never flip) is drawn once per clip
and applied to all of its frames and masks alike.

Frames become ImageNet-normalised float32 tensors `[3, H, W]`; masks stay PIL images here and
are turned into class ids by the readers (`avsbench.py`, `avss.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_IMAGE_SIZE = 224
RESIZES = ("square", "longest_side")
_MEAN_RGB = tuple(int(round(255 * m)) for m in IMAGENET_MEAN)


def _resample(is_mask: bool) -> Image.Resampling:
    return Image.Resampling.NEAREST if is_mask else Image.Resampling.BILINEAR


def resize_square(image: Image.Image, size: int, *, is_mask: bool = False) -> Image.Image:
    """Resize to `size x size` (the references' val/test resize; aspect ratio not kept)."""
    if image.size == (size, size):
        return image
    return image.resize((size, size), _resample(is_mask))


def content_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(height, width) of a `width x height` image resized to longest side `size`, aspect kept."""
    scale = size / max(width, height)
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def resize_longest_side(image: Image.Image, size: int, *, is_mask: bool = False) -> Image.Image:
    """Resize to longest side `size` (aspect kept), padded bottom / right to `size x size`."""
    height, width = content_size(*image.size, size)
    if (width, height) != image.size:
        image = image.resize((width, height), _resample(is_mask))
    if (width, height) == (size, size):
        return image
    fill = 0 if is_mask else _MEAN_RGB
    if image.mode not in ("RGB", "L", "P"):
        image = image.convert("RGB")
    if image.mode == "RGB" and is_mask:
        fill = (0, 0, 0)
    canvas = Image.new(image.mode, (size, size), fill)
    if image.mode == "P":
        canvas.putpalette(image.getpalette())
    canvas.paste(image, (0, 0))
    return canvas


def crop_resize(image: Image.Image, size: int, *, is_mask: bool = False) -> Image.Image:
    """Resize the short side to `size` (aspect kept), then crop the centre `size x size` square.

    This is the AVSS reference's training transform: the long side is scaled with
    `int(long * size / short)` and the crop starts at `round((long - size) / 2)`.
    """
    width, height = image.size
    if width > height:
        new_height, new_width = size, int(1.0 * width * size / height)
    else:
        new_width, new_height = size, int(1.0 * height * size / width)
    if (new_width, new_height) != image.size:
        image = image.resize((new_width, new_height), _resample(is_mask))
    left = int(round((new_width - size) / 2.0))
    top = int(round((new_height - size) / 2.0))
    if (left, top, new_width, new_height) == (0, 0, size, size):
        return image
    return image.crop((left, top, left + size, top + size))


def to_normalized_tensor(image: Image.Image) -> Tensor:
    """PIL image -> float32 `[3, H, W]`, scaled to [0, 1] then ImageNet-normalised."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    return (tensor - mean) / std


@dataclass(frozen=True)
class ClipTransform:
    """The same geometric transform for every frame and mask of one clip.

    Args:
        size: output side length; every frame and mask becomes `size x size`.
        crop: False -> `resize` (evaluation, S4/MS3 training); True -> `crop_resize`
            (the AVSS reference's training transform).
        resize: "square" (`resize_square`) or "longest_side" (`resize_longest_side`).
        hflip_prob: probability of flipping the whole clip left-right (drawn from torch's global
            generator, so DataLoader workers get their own seeds). 0 = never (the default).
    """

    size: int = DEFAULT_IMAGE_SIZE
    crop: bool = False
    hflip_prob: float = 0.0
    resize: str = "square"

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be a positive number of pixels, got {self.size}")
        if not 0.0 <= self.hflip_prob <= 1.0:
            raise ValueError(f"hflip_prob must lie in [0, 1], got {self.hflip_prob}")
        if self.resize not in RESIZES:
            raise ValueError(f"resize must be one of {RESIZES}, got {self.resize!r}")

    def geometry(self, image: Image.Image, *, is_mask: bool) -> Image.Image:
        """Resize (or crop-resize) one image without any random part."""
        if self.crop:
            return crop_resize(image, self.size, is_mask=is_mask)
        if self.resize == "longest_side":
            return resize_longest_side(image, self.size, is_mask=is_mask)
        return resize_square(image, self.size, is_mask=is_mask)

    def draw_flip(self) -> bool:
        """Whether this clip is flipped: one draw per clip."""
        return self.hflip_prob > 0.0 and float(torch.rand(())) < self.hflip_prob

    def __call__(
        self, frames: list[Image.Image], masks: list[Image.Image | None]
    ) -> tuple[list[Image.Image], list[Image.Image | None]]:
        """Transform one clip: frames and masks (None for frames without ground truth)."""
        flip = self.draw_flip()

        def apply(image: Image.Image, is_mask: bool) -> Image.Image:
            image = self.geometry(image, is_mask=is_mask)
            return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else image

        out_frames = [apply(frame, False) for frame in frames]
        out_masks = [None if mask is None else apply(mask, True) for mask in masks]
        return out_frames, out_masks


def eval_transform(size: int = DEFAULT_IMAGE_SIZE, resize: str = "square") -> ClipTransform:
    """Val/test: resize frames (bilinear) and masks (nearest) to `size x size` (`resize` above)."""
    return ClipTransform(size=size, resize=resize)


def train_transform(layout: str, size: int = DEFAULT_IMAGE_SIZE, *, hflip_prob: float = 0.0) -> ClipTransform:
    """The reference's training transform for `layout`: AVSS crop-resizes, S4/MS3 resize.

    (The S4/MS3 references do not resize at all; their frames are already 224 x 224, so a
    square resize to 224 leaves them unchanged.)
    """
    return ClipTransform(size=size, crop=(layout == "avss"), hflip_prob=hflip_prob)


def native_semantic(frames: list[Image.Image], ids: list[np.ndarray | None], slots: int) -> Tensor:
    """Class ids at the labels' own size `[slots, H0, W0]` (longest-side evaluation scores there).

    `ids[t]` is frame t's class-id map before any resize, or None without ground truth (zeros,
    as padded slots). The size is the first label's (the frames' when none is labelled); a label
    of another size is resized to it with nearest neighbour.
    """
    sizes = [a.shape for a in ids if a is not None]
    height, width = sizes[0] if sizes else (frames[0].size[1], frames[0].size[0])
    out = torch.zeros((slots, height, width), dtype=torch.int64)
    for t, array in enumerate(ids):
        if array is None:
            continue
        if array.shape != (height, width):
            array = np.asarray(Image.fromarray(array.astype(np.int32)).resize((width, height), Image.Resampling.NEAREST))
        out[t] = torch.from_numpy(array.astype(np.int64))
    return out
