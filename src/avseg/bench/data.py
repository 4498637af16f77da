"""`avseg bench data`: can the data loader feed training? DataLoader clips/s per worker count
against the clips/s of a training step of the same config.

A small synthetic set is written by the project's generator (`avseg.data.synth.generate`, every
clip in the train split) into a temporary folder, and read back through the loader `avseg train`
builds: `build_dataset(config, "train")` (decoding, resizing, the training transform) in an
`EpochSeededDataset`, `build_loader(..., shuffle=True, num_workers=W)`, the config's batch size.

Per worker count W, the first 1 + 2W batches are not timed (worker start-up, and the batches the
workers prefetch meanwhile: PyTorch's prefetch factor is 2); the rate is the clips of the next
`batches` batches (rounded up to a multiple of W) over the time they took, with nothing else
running. Batches come from the workers in turn, so a multiple of W starts and stops the clock at
the same point of every worker's cycle: the work the other workers did before the clock started
is matched by the work they have in hand when it stops. The training rate is
`avseg bench train`'s step (`measure_train`) on the same config at the same image size; the
ratio loader / train says how far the loader runs ahead of the model (target: >= 3 with 2
workers). Both are measured alone: in a real run they share the CPU cores.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from avseg.bench.common import RANDOM_INIT, check_at_least, check_device, fmt, int_list, write_rows
from avseg.config import Config, load_config
from avseg.data.layouts import LAYOUTS
from avseg.errors import UserError

DEFAULT_CONFIG = "configs/qsd_r50_{layout}.yaml"
PREFETCH = 2  # DataLoader's default prefetch_factor
TARGET_WORKERS, TARGET_RATIO = 2, 3.0


@dataclass
class DataRow:
    layout: str
    workers: int
    batch_size: int
    frames: int  # frame slots per clip
    image_size: int
    batches: int  # timed batches (--batches rounded up to a multiple of workers)
    warmup_s: float  # until the untimed first 1 + 2 * workers batches were in
    loader_clips_per_s: float
    train_config: str
    train_device: str
    train_clips_per_s: float
    ratio: float  # loader_clips_per_s / train_clips_per_s
    meets_target: bool | None  # ratio >= 3 for the 2-worker row; None for the others


def skipped_batches(workers: int) -> int:
    return 1 + PREFETCH * workers


def timed_batches(workers: int, batches: int) -> int:
    """`batches` rounded up to a multiple of the worker count (module docstring)."""
    return -(-batches // workers) * workers if workers > 0 else batches


def loader_config(config_path: str, layout: str | None, root: Path, image_size: int, overrides: list[str]) -> Config:
    """The config whose `data` section the loader is built from, pointed at the synthetic set."""
    config = load_config(config_path, RANDOM_INIT + [f"data.image_size={image_size}", *overrides])
    if config.data.dataset not in LAYOUTS:
        raise UserError(f"CONFIG {config_path} trains on {config.data.dataset}; bench data needs an "
                        f"{', '.join(LAYOUTS)} config")
    if layout is not None and layout != config.data.dataset:
        raise UserError(f"--layout {layout} but CONFIG {config_path} trains on {config.data.dataset}; "
                        f"give a config of the same data set (e.g. {DEFAULT_CONFIG.format(layout=layout)})")
    config.data.root = str(root)
    return config


def write_synthetic_set(config: Config, clips: int) -> float:
    """`avseg synth` into config.data.root: `clips` train clips of the config's layout; seconds taken."""
    from avseg.data.synth import SynthConfig, generate

    subsets = tuple(config.data.avss_subsets) if config.data.dataset == "avss" else None
    synth = SynthConfig(clips=clips, image_size=config.data.image_size, split=(1.0, 0.0, 0.0), avss_subsets=subsets,
                        workers=1 if clips <= 32 else None)  # a few clips: faster than starting processes
    return generate(config.data.dataset, Path(config.data.root), synth).seconds


def loader_rate(config: Config, workers: int, batches: int, seed: int = 0) -> tuple[float, float, int, int]:
    """(warm-up seconds, clips/s, frame slots per clip, timed batches) of the training loader."""
    from avseg.data.build import EpochSeededDataset, build_dataset, build_loader

    dataset = EpochSeededDataset(build_dataset(config, config.data.train_split), seed)
    loader = build_loader(dataset, config.data.batch_size, shuffle=True, num_workers=workers, seed=seed)
    skip, batches = skipped_batches(workers), timed_batches(workers, batches)
    if len(loader) < skip + batches:
        raise UserError(f"the synthetic set has {len(loader)} batches of {config.data.batch_size}; {workers} "
                        f"workers and --batches {batches} need {skip + batches} (raise --clips)")
    start = time.perf_counter()
    iterator = iter(loader)
    for _ in range(skip):
        batch = next(iterator)
    warm = time.perf_counter()
    clips = 0
    for batch in islice(iterator, batches):
        clips += len(batch.clip_ids)
    seconds = time.perf_counter() - warm
    del iterator  # shuts the workers down
    return warm - start, clips / seconds, int(batch.frames.shape[1]), batches


def run_data(config_path: str, *, layout: str | None = None, workers: list[int] = (0, 1, 2), clips: int | None = None,
             image_size: int = 224, batches: int = 20, device: str = "cpu", steps: int = 3, warmup: int = 1,
             overrides: list[str] = (), isolate: bool = True, progress=print) -> list[DataRow]:
    """Loader rate per worker count, and the training step rate of `config_path`, in one run."""
    from avseg.bench.train import measure_train, measure_train_isolated

    with tempfile.TemporaryDirectory(prefix="avseg-bench-data-") as tmp:
        config = loader_config(config_path, layout, Path(tmp) / "data", image_size, list(overrides))
        most = max(workers, key=lambda w: skipped_batches(w) + timed_batches(w, batches))
        needed = (skipped_batches(most) + timed_batches(most, batches)) * config.data.batch_size
        if clips is not None and clips < needed:
            raise UserError(f"--clips {clips}: --batches {batches} with {most} workers needs at least "
                            f"{needed} clips (batch size {config.data.batch_size})")
        seconds = write_synthetic_set(config, clips or needed)
        progress(f"  wrote {clips or needed} synthetic {config.data.dataset} clips at {image_size} px "
                 f"({seconds:.1f} s)")
        rates = []
        for count in workers:
            rates.append(loader_rate(config, count, batches, seed=config.seed))
            progress(f"  {count} workers: {rates[-1][1]:.2f} clips/s")
    measure = measure_train_isolated if isolate else measure_train
    train = measure(config_path, device=device, steps=steps, warmup=warmup, image_size=image_size,
                    overrides=list(overrides))
    progress(f"  training {config_path}: {train.clips_per_s:.3f} clips/s")
    rows = []
    for count, (warm, rate, frames, timed) in zip(workers, rates):
        ratio = rate / train.clips_per_s
        rows.append(DataRow(
            layout=config.data.dataset, workers=count, batch_size=config.data.batch_size, frames=frames,
            image_size=image_size, batches=timed, warmup_s=round(warm, 3), loader_clips_per_s=round(rate, 3),
            train_config=str(config_path), train_device=train.device, train_clips_per_s=train.clips_per_s,
            ratio=round(ratio, 3), meets_target=(ratio >= TARGET_RATIO) if count == TARGET_WORKERS else None,
        ))
    return rows


def format_data_table(rows: list[DataRow]) -> str:
    first = rows[0]
    lines = [f"layout {first.layout}, {first.image_size} px, batch {first.batch_size}, {first.frames} frame slots per "
             f"clip; training {first.train_config} on {first.train_device}: {first.train_clips_per_s:.3f} clips/s",
             f"{'workers':>8}{'warm-up s':>11}{'loader clips/s':>16}{'train clips/s':>15}{'loader/train':>14}"]
    for r in rows:
        lines.append(f"{r.workers:>8}{r.warmup_s:>11.2f}{r.loader_clips_per_s:>16.2f}{r.train_clips_per_s:>15.3f}"
                     f"{fmt(r.ratio, '.2f', 13)}x")
    target = [r for r in rows if r.meets_target is not None]
    verdict = (f"{'yes' if target[0].meets_target else 'NO'} ({target[0].ratio:.2f}x)" if target
               else f"not measured (add {TARGET_WORKERS} to --workers)")
    lines.append(f"target: loader >= {TARGET_RATIO:g}x the training rate with {TARGET_WORKERS} workers: {verdict}")
    return "\n".join(lines)


def run_cli(args) -> int:
    from avseg.cli_common import config_and_overrides

    config, overrides = config_and_overrides(args)
    workers = int_list(args.workers, "--workers")
    check_at_least(clips=(args.clips, 1), image_size=(args.image_size, 32), batches=(args.batches, 1),
                   steps=(args.steps, 1), warmup=(args.warmup, 0))
    check_device(args.device)
    config = config or DEFAULT_CONFIG.format(layout=args.layout or "avss")
    rows = run_data(config, layout=args.layout, workers=workers, clips=args.clips, image_size=args.image_size,
                    batches=args.batches, device=args.device, steps=args.steps, warmup=args.warmup,
                    overrides=overrides, isolate=not args.no_isolate, progress=lambda m: print(m, flush=True))
    print(format_data_table(rows))
    write_rows(args.json, rows)
    return 0
