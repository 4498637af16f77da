"""The data sets avseg reads, by the names configs use (`data.dataset`), and their ground truth.

S4 and MS3 are binary (class-agnostic: sounding vs background, the AVSBench J / F task); AVSS is
semantic (71 classes, mIoU / F); Single+ and the three VPO variants are semantic and scored with
CAVP's dataset-level metrics. Single+ has two readings: "single_plus", the v1s subset of the
AVSBench-Semantic release (avseg's), and "single_plus_cavp", the folder CAVP's loader reads
(frames/, labels/, audios/, a csv; 24 classes; `avseg.data.single_plus`).
"""

from __future__ import annotations

from avseg.errors import UserError

DATASETS = ("s4", "ms3", "avss", "single_plus", "single_plus_cavp", "vpo_ss", "vpo_ms", "vpo_msmi")
BINARY_DATASETS = ("s4", "ms3")
# the metric family of each data set: AVSBench J / F, AVSS mIoU / F, CAVP's dataset-level metrics
TASKS = {"s4": "binary", "ms3": "binary", "avss": "semantic", "single_plus": "cavp",
         "single_plus_cavp": "cavp", "vpo_ss": "cavp", "vpo_ms": "cavp", "vpo_msmi": "cavp"}
# one image per sample, scored as CAVP scores it (`data.vpo_eval`): VPO and Single+ in CAVP's layout
IMAGE_DATASETS = ("single_plus_cavp", "vpo_ss", "vpo_ms", "vpo_msmi")
VPO_EVAL_RULES = ("native", "square_vote")


def is_binary(dataset: str) -> bool:
    """Binary (class-agnostic) ground truth: S4 and MS3."""
    return dataset in BINARY_DATASETS


def is_image_dataset(dataset: str) -> bool:
    """One image per sample with 3 s of audio: VPO and Single+ in CAVP's layout."""
    return dataset in IMAGE_DATASETS


def task_of(dataset: str) -> str:
    """"binary", "semantic" or "cavp": which metrics score `dataset`."""
    check_dataset_name(dataset)
    return TASKS[dataset]


def check_dataset_name(name: str) -> None:
    if name not in DATASETS:
        raise UserError(f"data.dataset '{name}': expected one of {', '.join(DATASETS)}")
