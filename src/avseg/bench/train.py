"""`avseg bench train`: time of one training optimizer step, and what it means for a whole run.

A step is what `avseg train` does per batch (`avseg.engine.train.Trainer.train_step` without its
logging): batch to the device -> `forward_batch` -> `compute_losses` (Hungarian matching
included) -> backward (AMP scaler) -> gradient clipping -> AdamW step, with the model,
criterion, optimizer and batch-norm mode built from the config by the project's own functions.
The batches are synthetic, of the config's shape: random frames and log-mel examples, and per
labelled frame 1-3 random rectangles of random classes as the ground truth (drawn outside the
timed region). Clip shapes as the real readers produce them for training:

    S4     5 frames through the model, ground truth on frame 1 only (the train split's labels)
    MS3    5 frames, all labelled
    AVSS   10 frame slots (the reader pads v1s / v1m clips of 5 frames to 10: padded slots are
           zeros but still run through the model), all 10 labelled (the v2 case)

The projection multiplies the median step time by the batches of one epoch of the real train
split (ceil(clips / batch)) and by `train.epochs` (or `train.max_steps`): S4 3,452 clips, MS3
296, AVSS v1s 3,452 + v1m 296 + v2 4,750 (the subsets `data.avss_subsets` names). Every AVSS
clip costs a 10-slot step whatever its subset; a v1 clip's losses cover 1 (v1s) or 5 (v1m)
labelled frames instead of 10, so its step is a little cheaper than measured (an upper bound).
Evaluation, checkpoints and data loading (see `avseg bench data`) are not included.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from dataclasses import dataclass, field

import torch

from avseg.bench.common import (RANDOM_INIT, WEIGHT_WARNINGS, check_device, fmt, peak_memory_mb, run_worker,
                                worker_main)
from avseg.config import Config, load_config
from avseg.data.datasets import is_binary
from avseg.data.layouts import AVSBENCH_FRAMES, AVSS_FRAMES, AVSS_SLOTS
from avseg.errors import UserError

DEFAULT_CONFIGS = ("configs/qsd_r50_s4.yaml", "configs/qsd_r50_ms3.yaml", "configs/qsd_r50_avss.yaml")
AMP_MODES = ("none", "bf16", "fp16")
# train-split sizes of the real data sets, per subset
REAL_TRAIN_CLIPS = {
    "s4": {"s4": 3452},
    "ms3": {"ms3": 296},
    "avss": {"v1s": 3452, "v1m": 296, "v2": 4750},
    "single_plus": {"v1s": 3452},
}


@dataclass
class TrainRow:
    config: str
    model: str
    backbone: str
    dataset: str
    device: str
    batch_size: int
    frames: int  # frame slots per clip through the model
    labelled_frames: int  # frames per clip with ground truth (in the losses)
    image_size: int
    amp: str  # none / bf16 / fp16 (fp16: CUDA only)
    compile: str  # on / off
    steps: int  # timed steps (after the warm-up)
    ms_per_step: float  # median
    clips_per_s: float  # batch_size / median step time
    peak_mem_mb: float
    train_clips: int | None  # the real train split (None: no known size for this data set)
    epochs: int
    epoch_s: float | None  # projected seconds of one epoch
    schedule_s: float | None  # projected seconds of the whole schedule (train.epochs or max_steps)
    subsets: dict = field(default_factory=dict)  # subset -> {"clips", "frames", "epoch_s"}


def clip_shape(dataset: str) -> tuple[int, int]:
    """(frame slots through the model, labelled frames) of a training clip of `dataset`."""
    if dataset == "s4":
        return AVSBENCH_FRAMES, 1
    if dataset == "avss":
        return AVSS_SLOTS, AVSS_SLOTS
    return AVSBENCH_FRAMES, AVSBENCH_FRAMES  # ms3, single_plus (5 slots)


def train_clips(config: Config) -> dict[str, int]:
    """Real train-split clips per subset for the config's data set ({} when unknown, e.g. VPO)."""
    sizes = REAL_TRAIN_CLIPS.get(config.data.dataset, {})
    if config.data.dataset == "avss":
        return {s: sizes[s] for s in config.data.avss_subsets if s in sizes}
    return dict(sizes)


def project(row: TrainRow, config: Config) -> TrainRow:
    """Fill in the epoch and schedule projection of a measured row."""
    sizes = train_clips(config)
    if not sizes:
        return row
    seconds = row.ms_per_step / 1000
    total = sum(sizes.values())
    steps_per_epoch = math.ceil(total / row.batch_size)
    steps = config.train.max_steps if config.train.max_steps > 0 else config.train.epochs * steps_per_epoch
    row.train_clips = total
    row.epoch_s = round(steps_per_epoch * seconds, 1)
    row.schedule_s = round(steps * seconds, 1)
    row.subsets = {name: {"clips": clips, "frames": AVSS_FRAMES.get(name, row.frames),
                          "epoch_s": round(clips / row.batch_size * seconds, 1)} for name, clips in sizes.items()}
    return row


def synthetic_batch(config: Config, batch_size: int, generator: torch.Generator):
    """A training `Batch` of the config's clip shape: random inputs, random rectangles as targets."""
    from avseg.data.build import collate
    from avseg.data.sample import Sample, targets_from_semantic

    frames, labelled = clip_shape(config.data.dataset)
    size = config.data.image_size
    classes = 1 if is_binary(config.data.dataset) else config.model.num_classes
    samples = []
    for index in range(batch_size):
        semantic = torch.zeros(frames, size, size, dtype=torch.int64)
        for t in range(labelled):
            for _ in range(int(torch.randint(1, 4, (1,), generator=generator))):
                x0, y0 = (int(v) for v in torch.randint(0, size * 3 // 4, (2,), generator=generator))
                w, h = (int(v) for v in torch.randint(size // 8, size // 4 + 1, (2,), generator=generator))
                semantic[t, y0:y0 + h, x0:x0 + w] = int(torch.randint(1, classes + 1, (1,), generator=generator))
        masks, labels = zip(*(targets_from_semantic(frame) for frame in semantic))
        waveform = None
        if config.data.load_waveform or config.model.qsd.separator:
            waveform = torch.randn(frames * 16000, generator=generator) * 0.1
        samples.append(Sample(
            frames=torch.randn(frames, 3, size, size, generator=generator),
            log_mel=torch.randn(frames, 96, 64, generator=generator),
            semantic=semantic, masks=list(masks), labels=list(labels),
            frame_present=torch.ones(frames, dtype=torch.bool),
            label_present=torch.arange(frames) < labelled,
            clip_id=f"synthetic{index}", dataset=config.data.dataset, waveform=waveform,
        ))
    return collate(samples)


def bench_config(path: str, image_size: int | None, overrides: list[str]) -> Config:
    """The config a row is measured with: random init (no weight files), optional image size."""
    size = [f"data.image_size={image_size}"] if image_size else []
    return load_config(path, RANDOM_INIT + size + list(overrides))


def measure_train(config_path: str, *, device: str = "cpu", steps: int = 10, warmup: int = 2,
                  batch_size: int | None = None, image_size: int | None = None, amp: str = "none",
                  compile: bool = False, overrides: list[str] = ()) -> TrainRow:
    """Median time of one training optimizer step on synthetic batches, after `warmup` steps."""
    from avseg.engine.optim import build_optimizer, prepare_batchnorm, set_train_mode
    from avseg.engine.step import compute_losses, forward_batch, is_class_agnostic
    from avseg.models.build import build_criterion, build_model

    from avseg.engine.precision import amp_dtype, autocast, compile_model, grad_scaler

    if amp not in AMP_MODES:
        raise UserError(f"--amp {amp}: expected one of {', '.join(AMP_MODES)}")
    check_device(device)
    torch_device = torch.device(device)
    dtype = amp_dtype(amp, torch_device)  # bf16 on CUDA and the CPU; fp16 on CUDA only
    cuda = torch_device.type == "cuda"
    config = bench_config(config_path, image_size, list(overrides))
    t = config.train
    batch_size = batch_size or config.data.batch_size
    torch.manual_seed(config.seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=WEIGHT_WARNINGS)
        model = build_model(config)
    model = prepare_batchnorm(model, t.batchnorm, distributed=False, device=torch_device).to(torch_device)
    optimizer = build_optimizer(model, lr=t.lr, backbone_lr_mult=t.backbone_lr_mult, weight_decay=t.weight_decay)
    criterion = build_criterion(config).to(torch_device)
    wrapped = compile_model(model, torch_device) if compile else model
    scaler = grad_scaler(torch_device, dtype)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    agnostic = is_class_agnostic(config.data.dataset)
    set_train_mode(wrapped, t.batchnorm)
    generator = torch.Generator().manual_seed(config.seed)
    if cuda:
        torch.cuda.reset_peak_memory_stats(torch_device)
    times = []
    for index in range(warmup + steps):
        batch = synthetic_batch(config, batch_size, generator)
        if cuda:
            torch.cuda.synchronize(torch_device)
        start = time.perf_counter()
        batch = batch.to(torch_device, non_blocking=True)
        with autocast(torch_device, dtype):
            losses = compute_losses(forward_batch(wrapped, batch), batch, criterion, class_agnostic=agnostic)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(losses["loss_total"]).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, t.grad_clip if t.grad_clip > 0 else math.inf)
        scaler.step(optimizer)
        scaler.update()
        float(losses["loss_total"].detach())  # the real loop reads every loss value (its NaN check) each step
        if cuda:
            torch.cuda.synchronize(torch_device)
        if index >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    median = statistics.median(times)
    frames, labelled = clip_shape(config.data.dataset)
    row = TrainRow(
        config=str(config_path), model=config.model.name, backbone=config.model.backbone,
        dataset=config.data.dataset, device=str(torch_device), batch_size=batch_size, frames=frames,
        labelled_frames=labelled, image_size=config.data.image_size,
        amp=amp, compile="on" if compile else "off", steps=steps,
        ms_per_step=round(median, 2), clips_per_s=float(f"{batch_size * 1000 / median:.4g}"),  # 4 digits: slow steps keep theirs
        peak_mem_mb=round(peak_memory_mb(torch_device), 1), train_clips=None, epochs=t.epochs,
        epoch_s=None, schedule_s=None,
    )
    return project(row, config)


def measure_train_isolated(config_path: str, **kwargs) -> TrainRow:
    """`measure_train` in a fresh Python process (its own peak memory)."""
    request = {"config_path": str(config_path), **kwargs}
    return TrainRow(**run_worker("avseg.bench.train", request, f"bench train {config_path}"))


def run_train(configs: list[str], *, isolate: bool = True, progress=None, **kwargs) -> list[TrainRow]:
    rows = []
    for path in configs:
        rows.append((measure_train_isolated if isolate else measure_train)(path, **kwargs))
        if progress:
            progress(rows[-1])
    return rows


def _hours(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / 3600


def format_train_table(rows: list[TrainRow]) -> str:
    width = max([len("config"), *(len(r.config) for r in rows)]) + 2
    header = (f"{'config':<{width}}{'device':<7}{'batch':>6}{'frames':>8}{'px':>5}{'amp':>6}{'compile':>8}"
              f"{'ms/step':>10}{'clips/s':>9}{'peak MB':>9}{'train clips':>12}{'epoch h':>9}{'epochs':>7}"
              f"{'schedule h':>11}")
    lines = [header]
    for r in rows:
        lines.append(f"{r.config:<{width}}{r.device:<7}{r.batch_size:>6}{f'{r.frames}({r.labelled_frames})':>8}"
                     f"{r.image_size:>5}{r.amp:>6}{r.compile:>8}{r.ms_per_step:>10.1f}{r.clips_per_s:>9.2f}"
                     f"{r.peak_mem_mb:>9.0f}{fmt(r.train_clips, 'd', 12)}{fmt(_hours(r.epoch_s), '.2f', 9)}"
                     f"{r.epochs:>7}{fmt(_hours(r.schedule_s), '.2f', 11)}")
        if len(r.subsets) > 1:
            for name, sub in r.subsets.items():
                padded = f", padded to {r.frames}" if sub["frames"] < r.frames else ""
                lines.append(f"    {name}: {sub['clips']} clips ({sub['frames']} frames{padded}): "
                             f"{_hours(sub['epoch_s']):.2f} h of each epoch")
    lines.append("frames: slots per clip through the model (labelled frames in the losses); S4 trains on "
                 "1 labelled frame per clip, all 5 run through the model")
    return "\n".join(lines)



def run_cli(args) -> int:
    from avseg.bench.common import check_at_least, write_rows
    from avseg.cli_common import split_items

    configs, overrides = split_items(args.items)
    check_at_least(steps=(args.steps, 1), warmup=(args.warmup, 0), batch_size=(args.batch_size, 1),
                   image_size=(args.image_size, 32))
    check_device(args.device)
    rows = run_train(configs or list(DEFAULT_CONFIGS), isolate=not args.no_isolate, device=args.device,
                     steps=args.steps, warmup=args.warmup, batch_size=args.batch_size, image_size=args.image_size,
                     amp=args.amp, compile=args.compile, overrides=overrides,
                     progress=lambda r: print(f"  {r.config}: {r.ms_per_step:.1f} ms/step", flush=True))
    print(format_train_table(rows))
    write_rows(args.json, rows)
    return 0


if __name__ == "__main__":  # worker of measure_train_isolated
    worker_main(lambda request: measure_train(request.pop("config_path"), **request))
