"""Data sets and loaders from a `Config`: the only place that reads the `data` section.

    dataset = build_dataset(config, "train")          # any reader, as config.data names it
    loader = build_loader(dataset, batch_size=4, shuffle=True, num_workers=2, seed=0)
    names = class_names(config)                       # index = class id, 0 = background

Training data are made reproducible independently of worker count and of where a run resumes:
`EpochSeededDataset` draws each sample's randomness (e.g. the horizontal flip) from a generator
seeded by (seed, epoch, index), and `ResumableDistributedSampler` yields a permutation seeded by
(seed, epoch) that can start after the batches a resumed run has already consumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from avseg.config import Config
from avseg.data.augment import AugmentedDataset
from avseg.data.datasets import (  # noqa: F401 (DATASETS re-exported)
    DATASETS, VPO_EVAL_RULES, check_dataset_name, is_binary, is_image_dataset,
)
from avseg.data.sample import Batch, Sample, collate_samples
from avseg.distributed import world
from avseg.errors import UserError

CLASS_AGNOSTIC_NAMES = ["background", "sounding"]
_check_name = check_dataset_name


def build_dataset(config: Config, split: str) -> Dataset:
    """The reader of `config.data.dataset` for `split` ("train", "val" or "test").

    The train split gets the reference's training transform (plus the flip when
    `data.horizontal_flip`); the others the evaluation resize. AVSS reads `data.avss_subsets`
    padded to 10 slots (the reference's); Single+ (v1s only) to 5. VPO and Single+ in CAVP's
    layout: `image_dataset`. `audio.frontend` picks the audio features of every reader.
    """
    data = config.data
    _check_name(data.dataset)
    frontend = audio_frontend(config)
    augment = train_augment(config, split)
    if is_image_dataset(data.dataset):
        dataset = image_dataset(config, split, native=augment is not None)
        return dataset if augment is None else AugmentedDataset(dataset, augment)
    from avseg.data.transforms import RESIZES, train_transform

    if data.resize not in RESIZES:
        raise UserError(f"data.resize '{data.resize}': expected one of {', '.join(RESIZES)}")
    kwargs: dict = {"image_size": data.image_size, "load_waveform": data.load_waveform, "resize": data.resize}
    if frontend != "vggish":
        if is_binary(data.dataset):
            raise UserError(f"audio.frontend '{frontend}' is for AVSS, Single+ and VPO; S4 / MS3 read VGGish log-mels")
        kwargs["frontend"] = frontend
    if split == "train":
        layout = "avss" if data.dataset in ("avss", "single_plus") else data.dataset
        flip = data.horizontal_flip and augment is None  # CAVP's augmentation flips itself
        kwargs["train_transforms"] = train_transform(layout, data.image_size, hflip_prob=0.5 if flip else 0.0)
    if is_binary(data.dataset):
        kwargs["use_log_mel_pkl"] = data.use_log_mel_pkl
    elif data.dataset == "avss":
        kwargs["subsets"] = tuple(data.avss_subsets)
    else:  # single_plus: the v1s clips, 5 frames each
        kwargs["pad_to"] = 5
    dataset = build_reader(data.dataset, data.root, split, **kwargs)
    return dataset if augment is None else AugmentedDataset(dataset, augment)


def train_augment(config: Config, split: str):
    """`data.train_augment`, checked: CAVP's augmentation for the train split, else None."""
    from avseg.data.augment import AUGMENTS, cavp_augment_for

    name = config.data.train_augment
    if name not in AUGMENTS:
        raise UserError(f"data.train_augment '{name}': expected one of {', '.join(AUGMENTS)}")
    if name == "none" or split != "train":
        return None
    return cavp_augment_for(config.data.dataset, config.data.image_size)


def audio_frontend(config: Config) -> str:
    """`audio.frontend`, checked: "vggish" (default; QSD, TPAVI) or "cavp"."""
    from avseg.data.vpo import FRONTENDS

    frontend = config.audio.frontend
    if frontend not in FRONTENDS:
        raise UserError(f"audio.frontend '{frontend}': expected one of {', '.join(FRONTENDS)}")
    return frontend


def native_evaluation(config: Config, split: str) -> bool:
    """VPO / Single+ (CAVP's layout) evaluated CAVP's way: native size, batch 1 (`data.vpo_eval`)."""
    rule = config.data.vpo_eval
    if rule not in VPO_EVAL_RULES:
        raise UserError(f"data.vpo_eval '{rule}': expected one of {', '.join(VPO_EVAL_RULES)}")
    return is_image_dataset(config.data.dataset) and split != "train" and rule == "native"


def image_dataset(config: Config, split: str, *, native: bool = False) -> Dataset:
    """VPO or Single+ (CAVP's layout): one image per sample, wrapped in `StillImageClips`.

    Training reads `data.image_size` squares, or with `native` (CAVP's augmentation follows)
    each image at its own size. Evaluation with `data.vpo_eval: native` reads each
    image at its own size (CAVP tests at batch 1 without resizing; `evaluation_loader` then uses
    batches of 1); `square_vote` reads `image_size` squares. With the CAVP front end a sample has
    one audio input and gives one map; with VGGish the image is repeated once per 0.96 s example
    and the maps are merged by a per-pixel majority vote (evaluate.py).
    """
    data = config.data
    # native size: CAVP's evaluation, and (`native`) CAVP's augmentation, which rescales and crops
    # the original
    size = None if native or native_evaluation(config, split) else data.image_size
    frontend = audio_frontend(config)
    if data.dataset == "single_plus_cavp":
        from avseg.data.single_plus import SinglePlusDataset

        return StillImageClips(SinglePlusDataset(data.root, split, image_size=size, frontend=frontend,
                                                 load_waveform=data.load_waveform))
    from avseg.data.vpo import VPODataset

    return StillImageClips(VPODataset(data.root, split, variant=data.dataset[len("vpo_"):], image_size=size,
                                      load_waveform=data.load_waveform, frontend=frontend, remap=data.vpo_remap))


def build_reader(name: str, root: str | Path, split: str, **kwargs) -> Dataset:
    """An AVSBench-family reader by name: "s4", "ms3", "avss", or "single_plus".

    "single_plus" is CAVP's AVSBench-Single+: the single-source clips with per-class labels,
    which CAVP takes from the AVSBench-Semantic release (its `v1s` subset, read with the AVSS
    layout). It is `AVSSDataset(root, split, subsets=("v1s",), ...)`.
    """
    from avseg.data.avsbench import MS3Dataset, S4Dataset
    from avseg.data.avss import AVSSDataset

    if name == "s4":
        return S4Dataset(root, split, **kwargs)
    if name == "ms3":
        return MS3Dataset(root, split, **kwargs)
    if name in ("avss", "single_plus"):
        if name == "single_plus":
            if "subsets" in kwargs:
                raise ValueError("single_plus is the v1s subset of AVSS; do not pass subsets")
            kwargs["subsets"] = ("v1s",)
        return AVSSDataset(root, split, **kwargs)
    raise ValueError(f"unknown data set {name!r}; expected one of s4, ms3, avss, single_plus")


def class_names(config: Config) -> list[str]:
    """Class names of the configured data set, index = class id (0 = background).

    S4 / MS3: ["background", "sounding"]; AVSS / Single+: from ROOT/label2idx.json; VPO: the
    class table of the release (ROOT/vpo_classes.json, else CAVP's 21 classes).
    """
    name = config.data.dataset
    _check_name(name)
    if is_binary(name):
        return list(CLASS_AGNOSTIC_NAMES)
    if name in ("avss", "single_plus"):
        from avseg.data.avss import read_class_names

        return read_class_names(Path(config.data.root))
    if name == "single_plus_cavp":
        from avseg.data.single_plus import SINGLE_PLUS_CLASSES

        return list(SINGLE_PLUS_CLASSES)
    from avseg.data.vpo import load_class_table

    classes = load_class_table(Path(config.data.root))
    names = ["background"] + [""] * max(c.id for c in classes)
    for c in classes:
        names[c.id] = c.name
    return names


def check_num_classes(config: Config, names: list[str]) -> None:
    """UserError when model.num_classes does not fit the data set's classes."""
    expected = len(names) - 1
    if config.model.num_classes != expected:
        raise UserError(
            f"model.num_classes={config.model.num_classes}, but data set '{config.data.dataset}' at "
            f"{config.data.root} has {expected} foreground classes; set model.num_classes={expected}"
        )


# ----------------------------------------------------------------------------- wrappers


class StillImageClips(Dataset):
    """A VPO / Single+ sample (one image, T_a audio inputs) as a clip of T_a identical frames.

    Frame t is paired with audio example t; every frame carries the image's ground truth.
    Evaluation merges the T_a predictions back into one (evaluate.py). T_a = 1 (CAVP's front
    end: one 3 s spectrogram) leaves the sample as it is.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        sample = self.dataset[index]
        copies = int(sample.log_mel.shape[0])
        if sample.num_frames != 1 or copies == 1:
            return sample
        return Sample(
            frames=sample.frames.expand(copies, -1, -1, -1).clone(),
            log_mel=sample.log_mel,
            semantic=sample.semantic.expand(copies, -1, -1).clone(),
            masks=sample.masks * copies,
            labels=sample.labels * copies,
            frame_present=torch.ones(copies, dtype=torch.bool),
            label_present=sample.label_present.expand(copies).clone(),
            clip_id=sample.clip_id,
            dataset=sample.dataset,
            subset=sample.subset,
            category=sample.category,
            waveform=sample.waveform,
        )


class EpochSeededDataset(Dataset):
    """Seeds each sample's randomness from (seed, epoch, index), leaving the caller's RNG alone.

    Transforms draw from torch's global generator; here that generator is forked around every
    `__getitem__` and seeded per sample, so a sample is the same whichever worker loads it and
    whether or not a resumed run skipped the batches before it. Set `epoch` before each epoch.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, index))
            return self.dataset[index]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed from (seed, epoch, index) (splitmix64-style mixing)."""
    value = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & (2**64 - 1)
    value ^= value >> 31
    value = (value * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    return value & (2**63 - 1)


@dataclass(frozen=True)
class DamagedClip:
    """A clip that could not be read: its name and the reader's error (which names the file)."""

    clip_id: str
    error: str


def clip_name(dataset: Dataset, index: int) -> str:
    """The clip id of item `index` without reading it (falls back to '#index')."""
    inner = dataset
    while not hasattr(inner, "clips") and not hasattr(inner, "items") and hasattr(inner, "dataset"):
        inner = inner.dataset
    if hasattr(inner, "clips"):
        return str(inner.clips[index].clip_id)
    if hasattr(inner, "items"):
        return str(inner.items[index].sample_id)
    return f"#{index}"


class SkipDamaged(Dataset):
    """Returns a `DamagedClip` instead of raising when a reader fails with a UserError."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            return self.dataset[index]
        except UserError as err:
            return DamagedClip(clip_name(self.dataset, index), str(err))


def collate(samples: list[Sample]) -> Batch:
    """`collate_samples`, plus `extras["categories"]` and `extras["subsets"]` (CAVP pairing)."""
    batch = collate_samples(samples)
    batch.extras["categories"] = [s.category for s in samples]
    batch.extras["subsets"] = [s.subset for s in samples]
    return batch


def collate_skipping(items: list) -> tuple[Batch | None, list[DamagedClip]]:
    """(batch of the readable samples or None, damaged clips) for `SkipDamaged` data sets."""
    damaged = [item for item in items if isinstance(item, DamagedClip)]
    samples = [item for item in items if not isinstance(item, DamagedClip)]
    return (collate(samples) if samples else None), damaged


# ----------------------------------------------------------------------------- samplers, loaders


class ResumableDistributedSampler(DistributedSampler):
    """`DistributedSampler` (permutation seeded by seed + epoch) that can start mid-epoch.

    `set_epoch(epoch, start=k)` skips this rank's first k indices: a resumed run sets k to the
    batches already consumed times the per-rank batch size. Works without a process group when
    `num_replicas` and `rank` are given (1 and 0 for a single process).
    """

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int, shuffle: bool = True, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        super().set_epoch(epoch)
        self.start = int(start)

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.start:])

    def __len__(self) -> int:
        return max(self.num_samples - self.start, 0)


class ShardSampler(Sampler):
    """Evaluation sharding: rank r reads items r, r + W, r + 2W, ... (no padding, no repeats)."""

    def __init__(self, length: int, *, num_replicas: int, rank: int):
        self.indices = list(range(rank, length, num_replicas))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _world() -> tuple[int, int]:
    return world()


def build_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    distributed: bool = False,
    seed: int = 0,
    *,
    collate_fn=collate,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over `dataset` with `collate` (a `Batch` per step).

    shuffle=True (training): a `ResumableDistributedSampler` over all ranks when `distributed`
    (one rank otherwise): the permutation of epoch e is seeded by (seed, e); call
    `loader.sampler.set_epoch(e)` each epoch. shuffle=False (evaluation): in order, sharded
    over ranks without padding when `distributed`. The loader's own generator is seeded from
    `seed`, so creating an iterator never draws from torch's global generator.
    """
    world, rank = _world() if distributed else (1, 0)
    if shuffle:
        sampler: Sampler = ResumableDistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    elif world > 1:
        sampler = ShardSampler(len(dataset), num_replicas=world, rank=rank)
    else:
        sampler = ShardSampler(len(dataset), num_replicas=1, rank=0)
    generator = torch.Generator()
    generator.manual_seed(int(seed) + rank)
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, collate_fn=collate_fn,
        pin_memory=pin_memory, drop_last=False, generator=generator,
        persistent_workers=False,
    )


def batches_per_epoch(loader: DataLoader) -> int:
    """Batches of a full epoch of a training loader (independent of a resume offset)."""
    sampler = loader.sampler
    samples = getattr(sampler, "num_samples", len(sampler))
    return math.ceil(samples / loader.batch_size)
