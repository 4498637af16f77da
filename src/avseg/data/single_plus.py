"""AVSBench-Single+ in the layout of CAVP's loader (`data.dataset: single_plus_cavp`).

cyh-0/CAVP reads Single+ (its `get_avs_fn`, dataset/vpo_*/single_source) from one folder::

    ROOT/metadata.csv            name, category, split   (or the only *.csv of ROOT with them)
    ROOT/frames/{name}.png       the image
    ROOT/labels/{name}.png       class ids, one byte per pixel (24 classes, 0 = background;
                                 255 = ignore)
    ROOT/salient_labels/{name}.png   the class-agnostic label (binary runs; `salient=True`)
    ROOT/audios/{name}.wav       the clip's audio

`category` lists the image's class names joined by "," (e.g. "dog_barking,background"), names
from `SINGLE_PLUS_CLASSES` (the authors' `index_table_avs`). avseg's other Single+ reading,
`data.dataset: single_plus`, takes the v1s subset of the AVSBench-Semantic release instead.

Each row is one image (T = 1). Audio: the authors do not crop Single+ audio: the front end runs
over the whole wav and keeps its first 300 STFT frames (the first 3 s), channels as the file
has them. avseg does the same; a wav under 3 s is tiled by the authors' rule (theirs would give
fewer frames and fail to batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from avseg.data.layouts import LayoutError, read_metadata
from avseg.data.sample import Sample, targets_from_semantic
from avseg.data.vpo_pixels import read_image
from avseg.errors import UserError
from avseg.structures import IGNORE_INDEX

SINGLE_PLUS_CLASSES = (
    "background", "ambulance_siren", "baby_laughter", "cap_gun_shooting", "cat_meowing",
    "chainsawing_trees", "coyote_howling", "dog_barking", "driving_buses", "female_singing",
    "helicopter", "horse_clip-clop", "lawn_mowing", "lions_roaring", "male_speech",
    "mynah_bird_singing", "playing_acoustic_guitar", "playing_glockenspiel", "playing_piano",
    "playing_tabla", "playing_ukulele", "playing_violin", "race_car", "typing_on_computer_keyboard",
)
CSV_NAME = "metadata.csv"
COLUMNS = ("name", "category", "split")
FOLDERS = {"frame": "frames", "label": "labels", "salient": "salient_labels", "audio": "audios"}
AUDIO_SECONDS = 3
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SinglePlusRow:
    line: int
    name: str
    categories: tuple[str, ...]
    split: str

    @property
    def clip_id(self) -> str:
        return self.name


def paths(root: Path, name: str) -> dict[str, Path]:
    """The files of image `name`: frame, label, salient, audio."""
    suffix = {"audio": ".wav"}
    return {kind: Path(root) / folder / f"{name}{suffix.get(kind, '.png')}" for kind, folder in FOLDERS.items()}


def find_csv(root: Path) -> Path:
    """ROOT/metadata.csv, else the only csv of ROOT whose header has name, category, split."""
    root = Path(root)
    if (root / CSV_NAME).is_file():
        return root / CSV_NAME
    found = []
    for path in sorted(root.glob("*.csv")):
        try:
            read_metadata(path, COLUMNS)
            found.append(path)
        except LayoutError:
            continue
    if len(found) != 1:
        what = "none" if not found else ", ".join(p.name for p in found)
        raise UserError(f"{root}: expected {CSV_NAME} (or one csv with columns {', '.join(COLUMNS)}); found {what}")
    return found[0]


def read_rows(csv_path: Path) -> tuple[list[SinglePlusRow], list[str]]:
    """The usable rows and one message per bad row (unknown split or class name)."""
    try:
        table = read_metadata(csv_path, COLUMNS)
    except LayoutError as err:
        raise UserError(str(err)) from err
    rows, errors = [], []
    for line, row, _ in table:
        names = tuple(n.strip() for n in row["category"].split(",") if n.strip())
        unknown = [n for n in names if n not in SINGLE_PLUS_CLASSES]
        if row["split"] not in SPLITS:
            errors.append(f"line {line}: split {row['split']!r} is not train, val or test")
        elif unknown or not row["name"]:
            errors.append(f"line {line}: " + (f"class(es) {unknown} are not Single+ classes" if unknown else "empty name"))
        else:
            rows.append(SinglePlusRow(line, row["name"], names, row["split"]))
    return rows, errors


def read_label(path: Path, salient: bool = False) -> np.ndarray:
    """Label PNG -> int64 `[H, W]`: class ids (255 kept: ignore); salient: 1 where non-zero."""
    from PIL import Image

    if not path.is_file():
        raise UserError(f"{path}: label not found")
    try:
        with Image.open(path) as img:
            values = np.asarray(img if img.mode in ("L", "P") else img.convert("L")).astype(np.int64)
    except OSError as err:
        raise UserError(f"{path}: cannot decode the label PNG ({err})") from err
    if salient:
        return np.where(values == IGNORE_INDEX, IGNORE_INDEX, (values != 0).astype(np.int64))
    bad = sorted(set(np.unique(values).tolist()) - set(range(len(SINGLE_PLUS_CLASSES))) - {IGNORE_INDEX})
    if bad:
        raise UserError(f"{path}: label values {bad[:5]} are no Single+ class id (0..{len(SINGLE_PLUS_CLASSES) - 1}, 255)")
    return values


def audio_features(path: Path, frontend: str) -> tuple[torch.Tensor, np.ndarray]:
    """(features, mono 3 s waveform): cavp `[1, C, 300, 64]` or vggish `[3, 96, 64]`."""
    from avseg.audio import vggish_log_mel
    from avseg.audio.cavp_frontend import CLIP_FRAMES, SAMPLE_RATE, cavp_log_mel, crop, load_channels_16k

    wave = load_channels_16k(path)  # [C, n]
    length = AUDIO_SECONDS * SAMPLE_RATE
    if wave.shape[1] < length:
        wave = crop(wave, length, "authors")
    mono = wave[:, :length].mean(axis=0)
    if frontend == "cavp":
        return cavp_log_mel(wave, CLIP_FRAMES).unsqueeze(0), mono
    return torch.from_numpy(np.asarray(vggish_log_mel(mono, SAMPLE_RATE, num_examples=AUDIO_SECONDS),
                                       dtype=np.float32)), mono


class SinglePlusDataset(torch.utils.data.Dataset):
    """Single+ images in CAVP's layout as `Sample`s (T = 1).

    Args:
        root: the Single+ folder (module docstring).
        split: "train", "val" or "test" (the csv's rows of that split).
        image_size: square side of image (bicubic) and label (nearest); None = native size (the
            authors' evaluation, batch 1).
        frontend: "vggish" or "cavp" (`audio.frontend`).
        salient: read `salient_labels/` as binary ground truth instead of `labels/`.
        load_waveform: also return the mono 3 s waveform.
    """

    def __init__(self, root: str | Path, split: str, *, image_size: int | None = None,
                 frontend: str = "vggish", salient: bool = False, load_waveform: bool = False):
        self.root, self.split, self.image_size = Path(root), split, image_size
        self.frontend, self.salient, self.load_waveform = frontend, salient, load_waveform
        if split not in SPLITS:
            raise UserError(f"Single+ split {split!r}: expected train, val or test")
        if not self.root.is_dir():
            raise UserError(f"{self.root}: data set folder not found")
        csv_path = find_csv(self.root)
        rows, errors = read_rows(csv_path)
        if errors:
            raise UserError(f"{csv_path}: {errors[0]}" + (f" (and {len(errors) - 1} more; run avseg "
                            "check-data --layout single_plus_cavp)" if len(errors) > 1 else ""))
        self.clips = [r for r in rows if r.split == split]
        if not self.clips:
            raise UserError(f"{csv_path}: no rows with split {split!r}")
        self.class_names = ["background", "sounding"] if salient else list(SINGLE_PLUS_CLASSES)

    def __len__(self) -> int:
        return len(self.clips)

    def mask_paths(self, index: int) -> list[Path]:
        """The label file of item `index` relative to ROOT (where `--save-masks` writes)."""
        files = paths(self.root, self.clips[index].name)
        return [files["salient" if self.salient else "label"].relative_to(self.root)]

    def _resize(self, image, label: np.ndarray):
        from PIL import Image

        if self.image_size is None:
            return image, label
        size = (self.image_size, self.image_size)
        return (image.resize(size, Image.BICUBIC),
                np.asarray(Image.fromarray(label.astype(np.uint8)).resize(size, Image.NEAREST)).astype(np.int64))

    def __getitem__(self, index: int) -> Sample:
        from avseg.data.transforms import to_normalized_tensor

        row = self.clips[index]
        files = paths(self.root, row.name)
        image = read_image(files["frame"])
        label = read_label(files["salient" if self.salient else "label"], self.salient)
        if label.shape != (image.height, image.width):
            raise UserError(f"{files['label']}: label is {label.shape[1]}x{label.shape[0]}, "
                            f"frame {files['frame'].name} is {image.width}x{image.height}")
        image, label = self._resize(image, label)
        semantic = torch.from_numpy(np.ascontiguousarray(label)).unsqueeze(0)
        masks, labels = targets_from_semantic(semantic[0])
        log_mel, mono = audio_features(files["audio"], self.frontend)
        category = next((n for n in row.categories if n != "background"), None)
        return Sample(
            frames=to_normalized_tensor(image).unsqueeze(0), log_mel=log_mel, semantic=semantic,
            masks=[masks], labels=[labels], frame_present=torch.ones(1, dtype=torch.bool),
            label_present=torch.ones(1, dtype=torch.bool), clip_id=row.name, dataset="single_plus_cavp",
            category=category, waveform=torch.from_numpy(mono.astype(np.float32)) if self.load_waveform else None)
