"""VPO (CAVP's Visual Post-production benchmarks): reader, audio mixing and data check.

VPO pairs COCO images with VGGSound audio of the same class. ROOT is the folder that holds the
variant folders, as CAVP's release unpacks (`VPO/`) and as `avseg build-vpo --out` writes::

    ROOT/VPO-SS/vpo_ss_data_stereo.csv         one row per sample (one sounding object)
    ROOT/VPO-SS/data/{cateName}/{img:012d}.jpg
    ROOT/VPO-SS/mask/{cateName}/{img:012d}_{ann:012d}.png
    ROOT/VPO-MS/vpo_ms_data_stereo.csv         one row per sounding object, grouped by img_Id
    ROOT/VPO-MS/data/{img:012d}.jpg
    ROOT/VPO-MS/mask/{img:012d}.png
    ROOT/VPO-MSMI/vpo_msmi_data_stereo.csv     as MS; rows with multi_instance = 0 keep their
    ROOT/VPO-MSMI/{data,mask}/...              image and mask in VPO-MS (as the reference does)
    ROOT/audios/{vgg_file}.wav                 VGGSound sources (default; or pass audio_root)
    ROOT/vpo_classes.json                      optional: class table (build-vpo writes it)
    ROOT/vpo_instances.json                    optional: COCO annotations (per-instance masks)

CSV columns (CAVP's names): vgg_file, cateName, img_Id, ann_Ids, split, and optionally cateId,
audio_pos (0 = left .. 1 = right), multi_instance, vgg_label. Mask PNGs hold the COCO category
id of each object's pixels (0 = background, 255 = ignore: kept as 255, left out of losses and
metrics; `avseg.data.vpo_pixels`). Audio: each source is made mono, resampled to 16 kHz,
centre-cropped to 3 s and, for stereo, weighted (1 - audio_pos, audio_pos); sources summed.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from avseg.data.sample import Sample, targets_from_semantic
from avseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from avseg.data.vpo_audio import CLIP_SAMPLES, SAMPLE_RATE, centre_crop, load_source, mix_sources  # noqa: F401
from avseg.data.vpo_pixels import REMAPS, annotation_mask, class_lookup, read_image, read_mask  # noqa: F401
from avseg.errors import UserError
from avseg.structures import IGNORE_INDEX

VARIANTS = ("ss", "ms", "msmi")
VARIANT_DIRS = {"ss": "VPO-SS", "ms": "VPO-MS", "msmi": "VPO-MSMI"}
REQUIRED_COLUMNS = ("vgg_file", "cateName", "img_Id", "ann_Ids", "split")
CSV_COLUMNS = ("vgg_file", "vgg_label", "cateName", "cateId", "img_Id", "ann_Ids", "split",
               "audio_pos", "multi_instance")
CLASS_TABLE = "vpo_classes.json"
INSTANCES = "vpo_instances.json"
AUDIO_DIR = "audios"
LOG_MEL_EXAMPLES = 3  # 3 s -> three 0.96 s VGGish examples
IGNORE_VALUE = IGNORE_INDEX  # mask value CAVP leaves out of its loss and metrics
FRONTENDS = ("vggish", "cavp")


@dataclass(frozen=True)
class VPOClass:
    """One VPO class: id (1..), name (= csv cateName), COCO category ids found in mask PNGs."""

    id: int
    name: str
    coco_category_ids: tuple[int, ...]
    vggsound_labels: tuple[str, ...] = ()


# CAVP config/class_list.py: index_table_coco (ids) and coco_class_dict (COCO ids; 92-94 are the
# person sub-classes CAVP annotated itself).
_OFFICIAL = ("airplane 5", "baby 94", "bird 16", "bus 6", "car 3", "cat 17", "cell phone 77",
             "cow 21", "dog 18", "elephant 22", "female 93", "horse 19", "keyboard 76", "male 92",
             "motorcycle 4", "mouse 74", "sheep 20", "skateboard 41", "sports ball 37",
             "tennis racket 43", "zebra 24")
OFFICIAL_CLASSES = tuple(VPOClass(i + 1, s.rsplit(" ", 1)[0], (int(s.rsplit(" ", 1)[1]),))
                         for i, s in enumerate(_OFFICIAL))
NUM_CLASSES = len(OFFICIAL_CLASSES) + 1  # 22 with background


def load_class_table(root: Path) -> tuple[VPOClass, ...]:
    """ROOT/vpo_classes.json when present (a build-vpo set), else CAVP's 21 classes."""
    path = Path(root) / CLASS_TABLE
    if not path.is_file():
        return OFFICIAL_CLASSES
    try:
        entries = json.loads(path.read_text())["classes"]
        return tuple(VPOClass(int(e["id"]), str(e["name"]),
                              tuple(int(c) for c in e["coco_category_ids"]),
                              tuple(e.get("vggsound_labels", ()))) for e in entries)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: not a VPO class table ({err}); delete it to use the "
                        "official 21 classes or rebuild with avseg build-vpo") from err


def write_class_table(path: Path, classes: tuple[VPOClass, ...]) -> None:
    entries = [{"id": c.id, "name": c.name, "coco_category_ids": list(c.coco_category_ids),
                "vggsound_labels": list(c.vggsound_labels)} for c in classes]
    Path(path).write_text(json.dumps({"classes": entries}, indent=1) + "\n")


# ----------------------------------------------------------------------------- csv rows, items
@dataclass(frozen=True)
class VPORow:
    """One csv row: one sounding object. `line` is the 1-based csv line (header = 1)."""

    line: int
    vgg_file: str
    class_name: str
    image_id: int
    ann_id: int
    split: str
    category_id: int | None = None
    audio_pos: float | None = None
    multi_instance: bool | None = None


@dataclass(frozen=True)
class VPOItem:
    """One sample: an image, its mask and its sounding objects (SS: one row; MS/MSMI: all rows
    of one img_Id)."""

    variant: str
    sample_id: str
    split: str
    rows: tuple[VPORow, ...]
    image: Path
    mask: Path


def find_vpo_csv(root: Path, variant: str) -> Path:
    """ROOT/VPO-XX/vpo_xx_data_stereo.csv, else the first ROOT/VPO-XX/vpo_xx_data*.csv."""
    folder = Path(root) / VARIANT_DIRS[variant]
    preferred = folder / f"vpo_{variant}_data_stereo.csv"
    if preferred.is_file():
        return preferred
    others = sorted(folder.glob(f"vpo_{variant}_data*.csv"))
    if others:
        return others[0]
    raise UserError(f"{preferred}: not found; ROOT must be the folder holding "
                    f"{VARIANT_DIRS[variant]}/ (CAVP's unpacked VPO folder or a build-vpo --out)")


def _parse_row(raw: dict, line: int) -> VPORow:
    """Raises ValueError with a message naming the bad field."""
    def number(name, kind):
        text = (raw.get(name) or "").strip()
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"line {line}: {name} {text!r} is not a number") from None
        if kind is int and value != int(value):
            raise ValueError(f"line {line}: {name} {text!r} is not an integer")
        return kind(value)

    optional = {k: (raw.get(k) or "").strip() for k in ("cateId", "audio_pos", "multi_instance")}
    pos = number("audio_pos", float) if optional["audio_pos"] else None
    if pos is not None and not 0.0 <= pos <= 1.0:
        raise ValueError(f"line {line}: audio_pos {pos} is outside [0, 1]")
    split = (raw.get("split") or "").strip()
    if split not in ("train", "val", "test"):
        raise ValueError(f"line {line}: split {split!r} is not train, val or test")
    vgg_file, name = (raw.get("vgg_file") or "").strip(), (raw.get("cateName") or "").strip()
    if not vgg_file or not name:
        raise ValueError(f"line {line}: empty vgg_file or cateName")
    return VPORow(line, vgg_file, name, number("img_Id", int), number("ann_Ids", int), split,
                  number("cateId", int) if optional["cateId"] else None, pos,
                  bool(number("multi_instance", int)) if optional["multi_instance"] else None)


def read_vpo_rows(csv_path: Path) -> tuple[list[VPORow], list[str]]:
    """All parsable rows of a VPO csv and one message per bad row. Raises UserError when the
    file is missing or lacks a required column."""
    try:
        with open(csv_path, newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise UserError(f"{csv_path}: missing column(s) {', '.join(missing)} "
                                f"(a VPO csv has {', '.join(REQUIRED_COLUMNS)})")
            rows, errors = [], []
            for line, raw in enumerate(reader, start=2):
                try:
                    rows.append(_parse_row(raw, line))
                except ValueError as err:
                    errors.append(str(err))
            return rows, errors
    except OSError as err:
        raise UserError(f"{csv_path}: cannot read ({err.strerror})") from err


def item_paths(root: Path, variant: str, row: VPORow) -> tuple[Path, Path]:
    """(image, mask) of the sample a row belongs to, as the reference lays them out."""
    img = f"{row.image_id:012d}"
    if variant == "ss":
        base = Path(root) / VARIANT_DIRS["ss"]
        return (base / "data" / row.class_name / f"{img}.jpg",
                base / "mask" / row.class_name / f"{img}_{row.ann_id:012d}.png")
    folder = VARIANT_DIRS["ms"] if variant == "ms" or row.multi_instance is False else \
        VARIANT_DIRS["msmi"]
    return Path(root) / folder / "data" / f"{img}.jpg", Path(root) / folder / "mask" / f"{img}.png"


def group_items(root: Path, variant: str, rows: list[VPORow]) -> list[VPOItem]:
    """SS: one item per row; MS/MSMI: one item per img_Id, in order of first appearance."""
    if variant == "ss":
        keys = [(f"{r.image_id}_{r.ann_id}", [r]) for r in rows]
    else:
        groups: dict[int, list[VPORow]] = {}
        for r in rows:
            groups.setdefault(r.image_id, []).append(r)
        keys = [(str(k), v) for k, v in groups.items()]
    items = []
    for sample_id, members in keys:
        image, mask = item_paths(root, variant, members[0])
        split = "train" if members[0].split == "train" else "test"
        items.append(VPOItem(variant, sample_id, split, tuple(members), image, mask))
    return items


def load_instances(path: Path) -> dict[int, dict]:
    """COCO instances json -> {annotation id: {image_id, category_id, segmentation, h, w}}."""
    try:
        data = json.loads(Path(path).read_text())
        sizes = {int(i["id"]): (int(i["height"]), int(i["width"])) for i in data["images"]}
        return {int(a["id"]): {"image_id": int(a["image_id"]), "category_id": int(a["category_id"]),
                               "segmentation": a["segmentation"], "size": sizes[int(a["image_id"])]}
                for a in data["annotations"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: not a COCO instances json ({err!r})") from err


# ----------------------------------------------------------------------------- reader
class VPODataset(torch.utils.data.Dataset):
    """VPO-SS / VPO-MS / VPO-MSMI as `Sample`s: one image each (T = 1).

    `split`: "train", or "test" / "val" (both read the csv's val and test rows: the reference
    evaluates on its val rows). `image_size`: square side the image (bicubic) and masks
    (nearest) are resized to; None keeps the native size (the reference evaluates at native
    size, batch 1, and trains on random 512 crops). Each sample has frames `[1, 3, H, W]`,
    semantic `[1, H, W]` VPO class ids (255 = ignore), masks per sounding object when COCO
    annotations are available (`coco_annotations`, else ROOT/vpo_instances.json), else per class
    from the mask PNG, and with `load_waveform` the mono mix `[48000]`. `mixture(i, stereo=True)`
    gives the stereo mix.

    Audio (`frontend`): "vggish": log_mel `[3, 96, 64]`, the three VGGish examples of the 3 s mono
    mix (T_a = 3 != T = 1); "cavp": log_mel `[1, C, 300, 64]`, CAVP's front end of the 3 s mix
    (`avseg.audio.cavp_frontend`), C = 2 (stereo by audio_pos) when the csv has audio_pos, else 1,
    each source cropped with the authors' tiling of short clips. `remap`: "correct" (default) or
    "authors" (CAVP's class remapping quirk, `avseg.data.vpo_pixels`).
    """

    def __init__(self, root: str | Path, split: str, *, variant: str,
                 audio_root: str | Path | None = None, coco_annotations: str | Path | None = None,
                 image_size: int | None = 512, load_waveform: bool = False,
                 frontend: str = "vggish", remap: str = "correct"):
        if variant not in VARIANTS:
            raise UserError(f"VPO variant {variant!r}: expected one of {', '.join(VARIANTS)}")
        if split not in ("train", "val", "test"):
            raise UserError(f"VPO split {split!r}: expected train, val or test")
        if frontend not in FRONTENDS:
            raise UserError(f"audio.frontend '{frontend}': expected one of {', '.join(FRONTENDS)}")
        if remap not in REMAPS:
            raise UserError(f"data.vpo_remap '{remap}': expected one of {', '.join(REMAPS)}")
        self.root, self.variant, self.image_size = Path(root), variant, image_size
        self.load_waveform, self.frontend, self.remap = load_waveform, frontend, remap
        self.classes = load_class_table(self.root)
        self._lookup = class_lookup(self.classes)
        self._ids = {c.name: c.id for c in self.classes}
        csv_path = find_vpo_csv(self.root, variant)
        rows, errors = read_vpo_rows(csv_path)
        unknown = [f"line {r.line}: cateName {r.class_name!r} is no VPO class"
                   for r in rows if r.class_name not in self._ids]
        if errors or unknown:
            bad = errors + unknown
            raise UserError(f"{csv_path}: {bad[0]}" + (f" (and {len(bad) - 1} more; run "
                            "avseg check-data --layout vpo)" if len(bad) > 1 else ""))
        want = "train" if split == "train" else "test"
        self.items = [i for i in group_items(self.root, variant, rows) if i.split == want]
        self.audio_root = Path(audio_root) if audio_root else self.root / AUDIO_DIR
        path = Path(coco_annotations) if coco_annotations else self.root / INSTANCES
        path = path if coco_annotations or path.is_file() else None
        self._instances = load_instances(path) if path else None
        if self._instances is not None:
            self._check_annotation_ids(path)

    def _check_annotation_ids(self, path: Path) -> None:
        for item in self.items:
            for row in item.rows:
                ann = self._instances.get(row.ann_id)
                if ann is None or ann["image_id"] != row.image_id:
                    raise UserError(f"{path}: annotation id {row.ann_id} of image {row.image_id} "
                                    f"(csv line {row.line}) not found")

    def __len__(self) -> int:
        return len(self.items)

    def mixture(self, index: int, stereo: bool = False, short: str = "start") -> np.ndarray:
        """The sample's audio: float32 `[48000, 1]` mono, or `[48000, 2]` stereo (`short`: how
        sources under 3 s are tiled, `avseg.data.vpo_audio.centre_crop`)."""
        rows = self.items[index].rows
        sources = [load_source(self.audio_root / f"{r.vgg_file}.wav", short) for r in rows]
        if not stereo:
            return mix_sources(sources)
        if any(r.audio_pos is None for r in rows):
            raise UserError(f"{find_vpo_csv(self.root, self.variant)}: no audio_pos column; "
                            "stereo needs the *_stereo.csv of the release")
        return mix_sources(sources, [r.audio_pos for r in rows])

    def _cavp_audio(self, index: int) -> torch.Tensor:
        """CAVP's front end of the sample's 3 s mix: `[C, 300, 64]`, C = 2 with audio_pos."""
        from avseg.audio.cavp_frontend import clip_log_mel

        stereo = all(r.audio_pos is not None for r in self.items[index].rows)
        return clip_log_mel(self.mixture(index, stereo=stereo, short="authors").T)

    def _resize(self, array: np.ndarray) -> np.ndarray:
        from PIL import Image

        if self.image_size is None:
            return array
        size = (self.image_size, self.image_size)
        return np.asarray(Image.fromarray(array.astype(np.uint8)).resize(size, Image.NEAREST))

    def _targets(self, item: VPOItem, semantic: torch.Tensor,
                 native: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-object masks `[N, H, W]` and ids `[N]`: COCO rasters, or one per class present."""
        if self._instances is None:
            return targets_from_semantic(semantic)
        masks = []
        for row in item.rows:
            ann = self._instances[row.ann_id]
            if tuple(ann["size"]) != native:
                raise UserError(f"{item.image}: the COCO annotations give image {row.image_id} "
                                f"size {ann['size']} (H, W), the file is {native}")
            masks.append(self._resize(annotation_mask(ann["segmentation"], *native)) > 0)
        labels = torch.tensor([self._ids[r.class_name] for r in item.rows], dtype=torch.int64)
        return torch.from_numpy(np.stack(masks)), labels

    def __getitem__(self, index: int) -> Sample:
        from PIL import Image
        from avseg.audio import vggish_log_mel

        item = self.items[index]
        image = read_image(item.image)
        semantic = read_mask(item.mask, self._lookup, self.remap)
        if semantic.shape != (image.height, image.width):
            raise UserError(f"{item.mask}: mask is {semantic.shape[1]}x{semantic.shape[0]}, "
                            f"image {item.image.name} is {image.width}x{image.height}")
        if self.image_size is not None:
            image = image.resize((self.image_size, self.image_size), Image.BICUBIC)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        frames = ((pixels - mean.view(3, 1, 1)) / std.view(3, 1, 1)).unsqueeze(0)
        semantic_t = torch.from_numpy(self._resize(semantic).astype(np.int64))
        masks, labels = self._targets(item, semantic_t, semantic.shape)
        mono = self.mixture(index)[:, 0] if self.load_waveform or self.frontend == "vggish" else None
        if self.frontend == "cavp":
            log_mel = self._cavp_audio(index).unsqueeze(0)
        else:
            log_mel = torch.from_numpy(np.asarray(
                vggish_log_mel(mono, SAMPLE_RATE, num_examples=LOG_MEL_EXAMPLES), dtype=np.float32))
        return Sample(
            frames=frames, log_mel=log_mel, semantic=semantic_t.unsqueeze(0),
            masks=[masks], labels=[labels], frame_present=torch.ones(1, dtype=torch.bool),
            label_present=torch.ones(1, dtype=torch.bool), clip_id=item.sample_id,
            dataset=f"vpo_{self.variant}",
            category=item.rows[0].class_name if self.variant == "ss" else None,
            waveform=torch.from_numpy(mono.copy()) if self.load_waveform else None)
