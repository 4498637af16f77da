"""The data sets avseg reads, by the names configs use (`data.dataset`), and their ground truth.

S4 and MS3 are binary (class-agnostic: sounding vs background, the AVSBench J / F task); AVSS is
semantic (71 classes, mIoU / F); Single+ and the three VPO variants are semantic and scored with
CAVP's dataset-level metrics.
"""

from __future__ import annotations

from avseg.errors import UserError

DATASETS = ("s4", "ms3", "avss", "single_plus", "vpo_ss", "vpo_ms", "vpo_msmi")
BINARY_DATASETS = ("s4", "ms3")
# the metric family of each data set: AVSBench J / F, AVSS mIoU / F, CAVP's dataset-level metrics
TASKS = {"s4": "binary", "ms3": "binary", "avss": "semantic", "single_plus": "cavp",
         "vpo_ss": "cavp", "vpo_ms": "cavp", "vpo_msmi": "cavp"}


def is_binary(dataset: str) -> bool:
    """Binary (class-agnostic) ground truth: S4 and MS3."""
    return dataset in BINARY_DATASETS


def task_of(dataset: str) -> str:
    """"binary", "semantic" or "cavp": which metrics score `dataset`."""
    check_dataset_name(dataset)
    return TASKS[dataset]


def check_dataset_name(name: str) -> None:
    if name not in DATASETS:
        raise UserError(f"data.dataset '{name}': expected one of {', '.join(DATASETS)}")
