"""Evaluation: a model over a split, the task's metrics (avseg.metrics), damaged clips skipped.

    loader = evaluation_loader(config, "test")
    result = evaluate(model, loader, config)        # {"j", "f", ..., "skipped": [...], "main_metric": "j"}

Tasks and their metrics (`task_of`):

    binary    S4, MS3          AVSBenchMetric (J, F) on the foreground probability
    semantic  AVSS             AVSSMetric (mIoU, F) on predicted class ids
    cavp      Single+, VPO     CAVPMetric (mIoU, F1, FDR) on predicted class ids

Predictions: one rule for evaluation and prediction, `avseg.models.postprocess.segment`: QSD's K
masks become a foreground probability (the highest mask probability among the tokens whose best
class score reaches 0.3) for the binary task, and class ids (`merge_masks`) for the others; TPAVI's
dense logits are used directly (sigmoid / argmax). `avseg predict` shows these same maps. A clip
whose files cannot be read is reported by name and skipped; the result lists it in "skipped".
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from avseg.config import Config
from avseg.data.build import (
    DamagedClip, SkipDamaged, build_dataset, build_loader, class_names, collate_skipping, native_evaluation,
)
from avseg.data.datasets import TASKS, is_image_dataset, task_of  # noqa: F401 (re-exported)
from avseg.data.sample import Batch
from avseg.engine import distributed as dist_utils
from avseg.engine.step import forward_batch
from avseg.errors import UserError

MAIN_METRIC = {"binary": "j", "semantic": "miou", "cavp": "miou"}
AVSBENCH_FRAMES = 5


def main_metric(config: Config) -> str:
    """The key of the metric that picks `best.pt`: J (S4 / MS3), mIoU (AVSS, Single+, VPO)."""
    return MAIN_METRIC[task_of(config.data.dataset)]


class Indexed(torch.utils.data.Dataset):
    """Items as (data-set index, sample or DamagedClip): lets metrics order clips across ranks."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return index, self.dataset[index]


def _collate_indexed(items: list) -> tuple:
    indices = [index for index, _ in items]
    batch, damaged = collate_skipping([item for _, item in items])
    kept = [index for index, (_, item) in zip(indices, items) if not isinstance(item, DamagedClip)]
    if batch is not None:
        batch.extras["indices"] = kept
    return batch, damaged


def evaluation_loader(config: Config, split: str, *, distributed: bool = False) -> DataLoader:
    """In-order loader over `split` that skips (and reports) damaged clips. VPO / Single+ in
    CAVP's layout under `data.vpo_eval: native`: batches of 1 (images of their own sizes)."""
    dataset = Indexed(SkipDamaged(build_dataset(config, split)))
    workers = config.train.num_workers if config.train.num_workers >= 0 else config.data.num_workers
    batch_size = 1 if native_evaluation(config, split) else config.train.eval_batch_size or config.data.batch_size
    return build_loader(dataset, batch_size, shuffle=False,
                        num_workers=workers, distributed=distributed, collate_fn=_collate_indexed)


# ----------------------------------------------------------------------------- predictions


def predict(outputs: dict, task: str, size: tuple[int, int]) -> dict[str, Tensor]:
    """Per frame: "foreground" probability `[F, H, W]` and class "ids" `[F, H, W]`, by THE rule
    that `avseg predict` also uses (`avseg.models.postprocess.segment`, default thresholds)."""
    from avseg.models.postprocess import segment

    return segment(outputs, binary=task == "binary", size=size)


def _clip_batch(batch: Batch, b: int) -> Batch:
    """Clip b of a batch as a batch of one (labels and flags; what the metrics read)."""
    extras = {"indices": batch.extras["indices"][b:b + 1]} if "indices" in batch.extras else {}
    return Batch(frames=batch.frames[b:b + 1], log_mel=batch.log_mel[b:b + 1], semantic=batch.semantic[b:b + 1],
                 frame_present=batch.frame_present[b:b + 1], label_present=batch.label_present[b:b + 1],
                 targets=[batch.targets[b]], clip_ids=[batch.clip_ids[b]], datasets=[batch.datasets[b]],
                 extras=extras)


def at_label_size(batch: Batch, prediction: dict[str, Tensor], binary: bool):
    """Longest-side evaluation (`data.resize: longest_side`): per clip, the image part of the
    prediction (the padding cut off) resized to the labels' own size.

    Yields (clip batch, prediction at `[T, H0, W0]`, labels `[T, H0, W0]`). The foreground
    probability is resized bilinearly and thresholded after; class ids with nearest neighbour.
    """
    steps = batch.frames.shape[1]
    for b, (native, (height, width)) in enumerate(zip(batch.extras["native_semantic"], batch.extras["content_size"])):
        rows, size = slice(b * steps, (b + 1) * steps), tuple(native.shape[-2:])
        out = {}
        if binary:  # the J / F maps: the foreground probability, thresholded after resizing
            part = prediction["foreground"][rows, :height, :width].unsqueeze(1).float()
            out["foreground"] = nn.functional.interpolate(part, size=size, mode="bilinear", align_corners=False)[:, 0]
            out["ids"] = (out["foreground"] > 0.5).long()
        else:
            part = prediction["ids"][rows, :height, :width].unsqueeze(1).float()
            out["ids"] = nn.functional.interpolate(part, size=size, mode="nearest")[:, 0].long()
        yield _clip_batch(batch, b), out, native.to(out["ids"].device)


def _still_image_vote(ids: Tensor, copies: int) -> Tensor:
    """VPO / Single+ (CAVP's layout): T copies of one image -> one map `[B, H, W]`: the map itself
    when T = 1 (CAVP's front end), else the per-pixel majority over the copies (VGGish examples)."""
    if copies == 1:
        return ids.view(-1, *ids.shape[-2:])
    return ids.view(-1, copies, *ids.shape[-2:]).mode(dim=1).values


class TaskMetric:
    """The metric of a task, fed with whole batches (frame selection per task)."""

    def __init__(self, task: str, num_classes: int, frames_per_clip: int):
        from avseg.metrics import AVSBenchMetric, AVSSMetric, CAVPMetric

        self.task, self.frames_per_clip = task, frames_per_clip
        if task == "binary":
            self.metric = AVSBenchMetric(frames_per_clip, clips_per_batch=4, probabilities=True)
        elif task == "semantic":
            self.metric = AVSSMetric(num_classes)
        else:
            self.metric = CAVPMetric(num_classes)

    def update(self, batch, prediction: dict[str, Tensor], semantic: Tensor | None = None) -> None:
        """`semantic` `[F, H, W]` replaces the batch's labels (longest-side scoring at their size)."""
        semantic = batch.semantic.flatten(0, 1) if semantic is None else semantic
        labelled = batch.label_present.flatten()
        if self.task == "binary":
            # the labelled frames of each clip (all 5 on val / test; S4 train: the first)
            counts = batch.label_present.sum(dim=1)
            if bool((counts != self.frames_per_clip).any()):
                raise UserError(f"clips with {counts.tolist()} labelled frames; the AVSBench metric expects "
                                f"{self.frames_per_clip} per clip")
            self.metric.update(prediction["foreground"][labelled].cpu(), (semantic[labelled] > 0).cpu(),
                               clip_index=batch.extras.get("indices"))
        elif self.task == "semantic":
            # every slot the reference scores: labelled frames and zero-padded slots
            keep = labelled | ~batch.frame_present.flatten()
            self.metric.update(prediction["ids"][keep].cpu(), semantic[keep].cpu(),
                               frame_present=batch.frame_present.flatten()[keep].cpu())
        elif is_image_dataset(batch.datasets[0]):  # one map per image, scored at the batch's size
            copies = batch.frames.shape[1]
            ids = _still_image_vote(prediction["ids"], copies)
            self.metric.update(ids.cpu(), batch.semantic[:, 0].cpu())
        else:
            self.metric.update(prediction["ids"].cpu(), semantic.cpu(), label_present=labelled.cpu())

    def compute(self) -> dict:
        self.metric.sync()
        return self.metric.compute()


def labelled_frames_per_clip(config: Config, split: str) -> int:
    """Frames with ground truth per AVSBench-Object clip: S4 train labels only the first."""
    return 1 if config.data.dataset == "s4" and split == "train" else AVSBENCH_FRAMES


def _autocast(config: Config, device: torch.device):
    """train.amp's autocast: bf16 on CUDA and the CPU, fp16 on CUDA (avseg.engine.precision)."""
    from avseg.engine.precision import amp_dtype, autocast

    return autocast(device, amp_dtype(config.train.amp, device))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    config: Config,
    *,
    split: str | None = None,
    device: torch.device | None = None,
    save_masks: str | Path | None = None,
    overlays: str | Path | None = None,
    progress: bool = False,
) -> dict:
    """The task's metrics of `model` over `loader` (from `evaluation_loader`).

    Distributed: each rank evaluates its shard and the metric states are gathered (`sync`), so
    every rank returns the single-process result. Damaged clips are printed (rank 0) and listed.

    Returns the metric's dict plus "task", "main_metric", "skipped" (sorted clip ids),
    "skipped_errors" ({clip id: the reader's error}) and "num_clips" (clips evaluated).
    """
    from avseg.engine.writers import PredictionWriter

    split = split or config.data.val_split
    device = device or next(model.parameters()).device
    task = task_of(config.data.dataset)
    names = class_names(config)
    metric = TaskMetric(task, len(names), labelled_frames_per_clip(config, split))
    writer = PredictionWriter(loader.dataset, config, names, save_masks, overlays) if (save_masks or overlays) else None
    was_training = model.training
    model.eval()
    skipped: dict[str, str] = {}
    clips = 0
    from tqdm import tqdm

    from avseg.progress import progress_bars_off

    bar = tqdm(loader, desc=f"eval {split}", disable=not progress or progress_bars_off(), leave=False, dynamic_ncols=True)
    for batch, damaged in bar:
        for clip in damaged:
            skipped[clip.clip_id] = clip.error
            print(f"skipped damaged clip {clip.clip_id}: {clip.error}", file=sys.stderr)
        if batch is None:
            continue
        batch = batch.to(device)
        with _autocast(config, device):
            outputs = forward_batch(model, batch)
        prediction = predict(outputs, task, tuple(batch.semantic.shape[-2:]))
        if "native_semantic" in batch.extras:  # longest side: score at the labels' size
            for clip, clip_prediction, labels in at_label_size(batch, prediction, task == "binary"):
                metric.update(clip, clip_prediction, labels)
        else:
            metric.update(batch, prediction)
        if writer is not None:
            writer.write(batch, prediction)
        clips += len(batch.clip_ids)
    if was_training:
        model.train()
    for part in dist_utils.gather_objects(skipped):
        skipped.update(part)
    clips = sum(dist_utils.gather_objects(clips))
    if clips == 0:
        raise UserError(f"no clip of the {split} split could be evaluated ({len(skipped)} damaged)")
    result = metric.compute()
    result.update(task=task, main_metric=MAIN_METRIC[task], num_clips=clips, skipped=sorted(skipped),
                  skipped_errors=dict(sorted(skipped.items())))
    return result


# ----------------------------------------------------------------------------- avseg eval


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Tensor):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def per_class_rows(result: dict, names: list[str]) -> list[dict]:
    """Rows of per_class.csv: one per class (AVSS, CAVP), or the one "sounding" class (S4 / MS3)."""
    from avseg.metrics import per_class_table

    if "per_class" in result:
        return per_class_table(result, names)
    keys = ("j", "f", "j_frame_mean", "f_batch_independent")
    return [{"class_id": 1, "class_name": names[1], **{k: result[k] for k in keys if k in result}}]


def write_results(out: Path, result: dict, names: list[str], header: dict) -> tuple[Path, Path]:
    """OUT/metrics.json (header + result) and OUT/per_class.csv."""
    from avseg.metrics import write_per_class_csv

    out.mkdir(parents=True, exist_ok=True)
    metrics_path, table_path = out / "metrics.json", out / "per_class.csv"
    metrics_path.write_text(json.dumps(_jsonable({**header, **result}), indent=2) + "\n", encoding="utf-8")
    write_per_class_csv(table_path, per_class_rows(result, names))
    return metrics_path, table_path


def add_cli_arguments(parser) -> None:
    parser.add_argument("config", help="YAML config naming the data set (data.*); the model comes from the checkpoint")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.root=...")
    parser.add_argument("--checkpoint", required=True, help="checkpoint written by avseg train (best.pt, last.pt)")
    parser.add_argument("--split", default=None, help="train, val or test (default: data.test_split)")
    parser.add_argument("--out", default=None, help="folder for metrics.json and per_class.csv (default: output_dir)")
    parser.add_argument("--save-masks", metavar="DIR", default=None,
                        help="write predicted masks at the ground truth's relative paths under DIR")
    parser.add_argument("--overlays", metavar="DIR", default=None, help="write frames with the prediction blended in")
    parser.add_argument("--batch-size", type=int, default=0, help="clips per batch (default: train.eval_batch_size or data.batch_size)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (there is none when stderr is not a terminal)")
    parser.add_argument("--allow-import", action="store_true",
                        help="the checkpoint may use the package.module:factory model.qsd.separator that CONFIG names "
                             "(imports that code); a checkpoint alone never names code")
    add_precision_arguments(parser)


def add_precision_arguments(parser) -> None:
    """--device / --amp / --compile, shared by `avseg train` and `avseg eval` (train.device / amp / compile)."""
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                        help="sets train.device (the configs' default: auto, cuda if available, else cpu)")
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"), default=None,
                        help="autocast: bf16 (CUDA and CPU) or fp16 (CUDA, with a GradScaler); sets train.amp")
    parser.add_argument("--compile", action="store_true", default=None,
                        help="torch.compile the model (CUDA, and the CPU with a C compiler); sets train.compile")


def precision_overrides(args) -> list[str]:
    return ([f"train.amp={args.amp}"] if args.amp else []) + (["train.compile=true"] if args.compile else []) + \
        ([f"train.device={args.device}"] if args.device else [])


def run_cli(args) -> int:
    import warnings

    from avseg.config import load_config
    from avseg.engine.checkpoint import model_from_checkpoint
    from avseg.engine.distributed import resolve_device
    from avseg.metrics import format_table

    config = load_config(args.config, [*args.overrides, *precision_overrides(args)])
    if args.batch_size:
        config.train.eval_batch_size = args.batch_size
    split = args.split or config.data.test_split
    device = resolve_device(config.train.device)
    model, trained, checkpoint = model_from_checkpoint(args.checkpoint, map_location=device,
                                                       trusted=config if args.allow_import else None)
    names = class_names(config)
    if trained.model.num_classes != len(names) - 1:
        raise UserError(f"{args.checkpoint}: the model predicts {trained.model.num_classes} classes, data set "
                        f"'{config.data.dataset}' at {config.data.root} has {len(names) - 1}")
    if checkpoint.get("class_names") not in (None, names):
        warnings.warn(f"{args.checkpoint}: trained with other class names than {config.data.root} has")
    config.model = trained.model
    if config.train.compile:
        from avseg.engine.precision import compile_model

        model = compile_model(model, device)
    loader = evaluation_loader(config, split)
    result = evaluate(model, loader, config, split=split, device=device, save_masks=args.save_masks,
                      overlays=args.overlays, progress=sys.stderr.isatty() and not args.no_progress)
    header = {"checkpoint": str(args.checkpoint), "step": checkpoint.get("step"), "dataset": config.data.dataset,
              "root": config.data.root, "split": split}
    metrics_path, table_path = write_results(Path(args.out or config.output_dir), result, names, header)
    print(f"{config.data.dataset} {split}: {result['num_clips']} clips ({args.checkpoint})")
    print(format_table({k: v for k, v in result.items() if k not in ("per_class",)}))
    if result["skipped"]:
        print(f"skipped {len(result['skipped'])} damaged clip(s): {', '.join(result['skipped'])}")
    print(f"wrote {metrics_path} and {table_path}")
    return 0
