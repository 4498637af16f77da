"""`avseg train`: the training loop (one process or DDP under torchrun), resumable exactly.

    avseg train configs/qsd_r50_s4.yaml [key=value ...] [--resume CKPT|auto]
    torchrun --nproc_per_node 8 -m avseg.cli train configs/qsd_r50_avss.yaml

Per step: (CAVP pairing) -> forward -> losses -> NaN / inf check over all ranks -> backward (AMP
scaler) -> gradient clipping -> AdamW. Per epoch: the lr step schedule, evaluation on the val
split (best.pt by the task's main metric), last.pt. Checkpoints hold everything a resumed run
needs to continue exactly: model, optimizer, scheduler, scaler, every rank's RNG states, epoch,
step and the batches already consumed in the epoch (the data order of an epoch is a permutation
seeded by (seed, epoch), each sample's randomness is seeded by (seed, epoch, index)).
docs/training.md describes every option.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from itertools import islice
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from avseg.config import Config, config_to_dict
from avseg.config_compat import comparable_model_section
from avseg.data.build import (EpochSeededDataset, SkipDamaged, batches_per_epoch, build_dataset, build_loader,
                              check_num_classes, collate_skipping)
from avseg.data.build import class_names as dataset_class_names, sample_seed
from avseg.engine import distributed as dist_utils
from avseg.engine.checkpoint import load_checkpoint, save_checkpoint
from avseg.engine.cavp_pairing import build_pairing
from avseg.engine.damaged import DamagedTally, damaged_limit
from avseg.engine.precision import AMP_MODES, amp_dtype, autocast, compile_model, grad_scaler
from avseg.engine.optim import build_optimizer, build_scheduler, prepare_batchnorm, set_train_mode
from avseg.engine.run_dir import LAST, BEST, prepare_output, resolve_resume
from avseg.engine.runlog import RunLog
from avseg.engine.seeding import capture_rng_state, configure_determinism, restore_rng_state, seed_everything
from avseg.engine.pairing import paired_losses
from avseg.engine.step import is_class_agnostic
from avseg.errors import UserError


class TrainingDiverged(UserError):
    """A loss or the gradient became NaN / inf: the run stops, the last good checkpoint stays."""


def _note(message: str, info: dist_utils.DistInfo) -> None:
    if info.is_main:
        print(f"avseg train: {message}", file=sys.stderr, flush=True)


class Trainer:
    """Everything one training run holds; `run()` trains to the end (see the module docstring)."""

    def __init__(self, config: Config, info: dist_utils.DistInfo, on_step: Callable[[int], None] | None = None,
                 allow_import: bool = False):
        self.config, self.info, self.on_step, self.allow_import = config, info, on_step, allow_import
        t = config.train
        if t.amp not in AMP_MODES:
            raise UserError(f"train.amp '{t.amp}': expected none, bf16 or fp16")
        self.seed = t.seed if t.seed >= 0 else config.seed
        self.device = info.device
        self.out = Path(config.output_dir)
        configure_determinism(t.deterministic)
        seed_everything(self.seed)
        self.class_names = dataset_class_names(config)
        check_num_classes(config, self.class_names)
        self.class_agnostic = is_class_agnostic(config.data.dataset)
        self.cavp = build_pairing(config, self.class_agnostic)  # None: the empty-target pairing (or none)
        self._build_data()
        self._build_model()
        try:  # bf16 autocast on CUDA and on the CPU; fp16 (with the GradScaler) on CUDA only
            self.amp = amp_dtype(t.amp, self.device)
        except UserError as err:
            raise UserError(f"train.amp: {err}") from None
        self.scaler = grad_scaler(self.device, self.amp)
        self.epoch = self.step = self.batches_done = 0
        self.best: float | None = None
        self.best_step = -1
        self.last_saved_step: int | None = None
        self.log = RunLog(self.out, enabled=info.is_main)

    # ------------------------------------------------------------------------- set-up

    def _build_data(self) -> None:
        c, t = self.config, self.config.train
        workers = t.num_workers if t.num_workers >= 0 else c.data.num_workers
        self.train_set = EpochSeededDataset(SkipDamaged(build_dataset(c, c.data.train_split)), self.seed)
        self.loader = build_loader(self.train_set, c.data.batch_size, shuffle=True, num_workers=workers,
                                   distributed=self.info.distributed, seed=self.seed, collate_fn=collate_skipping)
        self.damaged = DamagedTally(damaged_limit(c.data.max_damaged, len(self.train_set)), c.data.train_split,
                                    self._report_damaged)
        self.steps_per_epoch = batches_per_epoch(self.loader)
        if self.steps_per_epoch == 0:
            raise UserError(f"the {c.data.train_split} split of {c.data.root} is empty")
        self.val_loader = None
        if t.eval_every > 0:
            from avseg.engine.evaluate import evaluation_loader

            self.val_loader = evaluation_loader(c, c.data.val_split, distributed=self.info.distributed)

    def _build_model(self) -> None:
        from avseg.models.build import build_criterion, build_model

        c, t = self.config, self.config.train
        model = build_model(c, allow_import=self.allow_import)
        model = prepare_batchnorm(model, t.batchnorm, distributed=self.info.distributed, device=self.device)
        self.model = model.to(self.device)  # the plain module: checkpoints, evaluation
        self.optimizer = build_optimizer(self.model, lr=t.lr, backbone_lr_mult=t.backbone_lr_mult,
                                         weight_decay=t.weight_decay, optimizer=t.optimizer, momentum=t.momentum)
        self.scheduler = build_scheduler(self.optimizer, drop_epochs=t.lr_drop_epochs, factor=t.lr_drop_factor,
                                         schedule=t.schedule, total_steps=self.total_steps(), power=t.poly_power)
        self.criterion = build_criterion(c).to(self.device)
        wrapped: nn.Module = self.model
        if self.info.distributed:
            wrapped = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None,
                find_unused_parameters=t.find_unused_parameters)
        if t.compile:  # on the CPU too (inductor needs a C compiler there)
            wrapped = compile_model(wrapped, self.device)
        self.wrapped = wrapped
        from avseg.models.quantizer import SharedCodebookQuantizer

        self.quantizers = [m for m in self.model.modules() if isinstance(m, SharedCodebookQuantizer)]

    # ------------------------------------------------------------------------- checkpoints

    def resume(self, path: str | Path) -> None:
        """Load a training checkpoint: weights, optimizer, scheduler, scaler, RNGs, position."""
        checkpoint = load_checkpoint(path, map_location="cpu")
        missing = [k for k in ("optimizer", "scheduler", "rng", "extra") if k not in checkpoint]
        if missing:
            raise UserError(f"{path}: not a training checkpoint (no {', '.join(missing)}); it cannot be resumed")
        if comparable_model_section(checkpoint["config"]) != comparable_model_section(config_to_dict(self.config)):
            raise UserError(f"{path}: was trained with another model config than {self.out / 'config.yaml'}")
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        extra = checkpoint["extra"]
        self.epoch, self.step = int(checkpoint["epoch"]), int(checkpoint["step"])
        self.batches_done = int(extra["batches_done"])
        self.best, self.best_step = extra.get("best_metric"), int(extra.get("best_step", -1))
        self.damaged.restore(extra.get("damaged_clips"))
        same = (extra.get("world_size"), extra.get("batch_size"), extra.get("seed")) == (
            self.info.world_size, self.config.data.batch_size, self.seed)
        if not same:
            _note("resuming with another world size, batch size or seed: the run will not match an "
                  "uninterrupted one exactly", self.info)
            self.batches_done = min(self.batches_done, self.steps_per_epoch)
        states = checkpoint["rng"]["per_rank"]
        restore_rng_state(states[self.info.rank] if len(states) == self.info.world_size else states[0])
        self.last_saved_step = self.step
        replayed = self.log.rewind(self.step)
        self.log.write("note", self.step, self.epoch, {"message": f"resumed from {path}", "records_dropped": replayed})
        _note(f"resumed from {path}: epoch {self.epoch}, step {self.step}", self.info)

    def save(self, name: str) -> None:
        """Write OUTPUT_DIR/name atomically (rank 0); refuses a state with non-finite weights."""
        states = dist_utils.gather_objects(capture_rng_state())  # every rank's generators
        if self.info.is_main:
            names, params = zip(*self.model.named_parameters())
            norms = torch.stack(torch._foreach_norm([p.detach().float() for p in params]))
            if not bool(torch.isfinite(norms).all()):
                bad = names[int((~torch.isfinite(norms)).nonzero()[0])]
                raise TrainingDiverged(f"parameters became non-finite by step {self.step} ({bad}, ...); "
                                       f"not saving; {self._kept()}")
            save_checkpoint(
                self.out / name, model=self.model, config=self.config, step=self.step, epoch=self.epoch,
                optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict(), rng={"per_rank": states}, class_names=list(self.class_names),
                extra={"batches_done": self.batches_done, "best_metric": self.best, "best_step": self.best_step,
                       "main_metric": self._main_metric(), "world_size": self.info.world_size,
                       "batch_size": self.config.data.batch_size, "seed": self.seed,
                       "steps_per_epoch": self.steps_per_epoch, "damaged_clips": self.damaged.state()},
            )
        if name == LAST:
            self.last_saved_step = self.step
        dist_utils.barrier()

    def _report_damaged(self, clip_id: str, error: str) -> None:
        self.log.write("damaged", self.step, self.epoch, {"clip": clip_id, "error": error})
        rank = f" (rank {self.info.rank})" if self.info.distributed else ""
        print(f"avseg train: skipping damaged clip {clip_id}{rank}: {error}", file=sys.stderr, flush=True)

    def _kept(self) -> str:
        if self.last_saved_step is None:
            return "no checkpoint had been written yet"
        return f"the last good checkpoint is kept: {self.out / LAST} (step {self.last_saved_step})"

    def _main_metric(self) -> str:
        from avseg.engine.evaluate import main_metric

        return main_metric(self.config)

    # ------------------------------------------------------------------------- the loop

    def total_steps(self) -> int:
        t = self.config.train
        return t.max_steps if t.max_steps > 0 else t.epochs * self.steps_per_epoch

    def run(self) -> dict:
        total = self.total_steps()
        _note(f"{self.steps_per_epoch} steps per epoch, {total} steps, world size {self.info.world_size}, "
              f"device {self.device}, output {self.out}", self.info)
        self._window: dict[str, float] = {}
        self._window_steps, self._window_start = 0, time.perf_counter()
        while self.step < total:
            self.train_epoch(total)
            if self.batches_done >= self.steps_per_epoch:
                self.end_epoch()
        if self.last_saved_step != self.step:
            self.save(LAST)
        self.log.close()
        return {"steps": self.step, "epochs": self.epoch, "best_metric": self.best, "best_step": self.best_step,
                "main_metric": self._main_metric(), "output_dir": str(self.out)}

    def train_epoch(self, total: int) -> None:
        from tqdm import tqdm

        from avseg.progress import progress_bars_off

        batch_size = self.config.data.batch_size
        self.train_set.epoch = self.epoch
        self.loader.sampler.set_epoch(self.epoch, start=self.batches_done * batch_size)
        set_train_mode(self.wrapped, self.config.train.batchnorm)
        for q in self.quantizers:
            q.reset_usage()
        remaining = min(self.steps_per_epoch - self.batches_done, total - self.step)
        bar = tqdm(total=self.steps_per_epoch, initial=self.batches_done, desc=f"epoch {self.epoch}",
                   disable=not self.info.is_main or progress_bars_off(), dynamic_ncols=True, leave=False)
        for batch, damaged in islice(self.loader, max(remaining, 0)):
            self.damaged.add(damaged)
            if batch is None:  # every clip of the batch is damaged: nothing to learn from
                if self.info.distributed:
                    raise UserError(f"every clip of a batch is damaged ({', '.join(c.clip_id for c in damaged)}); "
                                    "under DDP the ranks cannot skip it alone")
                self.batches_done += 1
                bar.update(1)
                continue
            losses = self.train_step(batch)
            self.step += 1
            self.batches_done += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses['loss_total']:.4f}")
            if self.step % max(self.config.train.log_every, 1) == 0:
                self.write_train_log()
            every = self.config.train.checkpoint_every_steps
            if every > 0 and self.step % every == 0:
                self.save(LAST)
            if self.on_step is not None:
                self.on_step(self.step)
        bar.close()

    def end_epoch(self) -> None:
        if self.config.train.schedule == "step":
            self.scheduler.step()
        self.epoch += 1
        self.batches_done = 0
        every = self.config.train.eval_every
        if self.val_loader is not None and self.epoch % every == 0:
            self.validate()
        every = self.config.train.checkpoint_every_epochs
        if every > 0 and self.epoch % every == 0:
            self.save(LAST)

    def validate(self) -> None:
        from avseg.engine.evaluate import evaluate

        result = evaluate(self.model, self.val_loader, self.config, split=self.config.data.val_split,
                          device=self.device, progress=self.info.is_main)
        set_train_mode(self.wrapped, self.config.train.batchnorm)
        key = result["main_metric"]
        scalars = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        scalars["skipped"] = len(result["skipped"])
        self.log.write("eval", self.step, self.epoch, scalars)
        value = float(result[key])
        _note(f"epoch {self.epoch} step {self.step}: val {key} = {value:.4f}"
              + (f" ({len(result['skipped'])} damaged clips skipped)" if result["skipped"] else ""), self.info)
        if self.best is None or value > self.best:
            self.best, self.best_step = value, self.step
            self.save(BEST)

    # ------------------------------------------------------------------------- one step

    def _autocast(self):
        return autocast(self.device, self.amp)

    def train_step(self, batch) -> dict[str, float]:
        t = self.config.train
        generator = torch.Generator().manual_seed(sample_seed(self.seed, self.step, self.info.rank))
        if self.cavp is not None:  # CAVP: doubled batch, sound bank, contrastive loss (docs/cavp.md)
            losses, paired = self.cavp.losses(self.wrapped, batch, self.criterion, epoch=self.epoch,
                                              generator=generator, device=self.device, autocast=self._autocast)
        else:  # plain, or the empty-target pairing (train.contrastive_share > 0)
            losses, paired = paired_losses(self.wrapped, batch, self.criterion, share=t.contrastive_share,
                                           class_agnostic=self.class_agnostic, generator=generator,
                                           device=self.device, autocast=self._autocast)
        values = self._check_losses(losses)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss_total"]).backward()
        self.scaler.unscale_(self.optimizer)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, t.grad_clip if t.grad_clip > 0 else math.inf))
        if not math.isfinite(grad_norm) and not self.scaler.is_enabled():
            self.log.write("diverged", self.step + 1, self.epoch, {"grad_norm": str(grad_norm)})
            raise TrainingDiverged(f"non-finite gradient norm ({grad_norm}) at step {self.step + 1} (epoch "
                                   f"{self.epoch}, batch {self.batches_done + 1}); training stopped; {self._kept()}")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if t.schedule == "poly":  # stepped per optimizer step
            self.scheduler.step()
        values.update(grad_norm=grad_norm, paired=float(paired))
        for key, value in values.items():
            self._window[key] = self._window.get(key, 0.0) + value
        self._window_steps += 1
        return values

    def _check_losses(self, losses: dict) -> dict[str, float]:
        """Loss values averaged over ranks; TrainingDiverged naming the terms if any is NaN / inf."""
        keys = list(losses)
        stacked = torch.stack([losses[k].detach().float().reshape(()) for k in keys])
        stacked = dist_utils.all_reduce_sum_(stacked) / self.info.world_size
        values = dict(zip(keys, stacked.tolist()))
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            terms = ", ".join(f"{k}={v}" for k, v in bad.items())
            self.log.write("diverged", self.step + 1, self.epoch, {k: str(v) for k, v in bad.items()})
            raise TrainingDiverged(f"non-finite loss at step {self.step + 1} (epoch {self.epoch}, batch "
                                   f"{self.batches_done + 1}): {terms}; training stopped; {self._kept()}. "
                                   "Try a lower train.lr, train.grad_clip, or train.amp=bf16 instead of fp16.")
        return values

    def write_train_log(self) -> None:
        steps = max(self._window_steps, 1)
        record = {k: v / steps for k, v in self._window.items()}
        for group in self.optimizer.param_groups:
            record[f"lr_{group['name']}"] = group["lr"]
        for i, q in enumerate(self.quantizers):
            suffix = "" if i == 0 else f"_{i}"
            for kind, local in (("global", False), ("local", True)):
                counts = dist_utils.all_reduce_sum_(q.usage_histogram(local=local).to(self.device)).float()
                if counts.sum() > 0:
                    probs = counts / counts.sum()
                    entropy = -(probs * probs.clamp_min(1e-12).log()).sum()
                    record[f"codebook_{kind}_usage{suffix}"] = float((counts > 0).float().mean())
                    record[f"codebook_{kind}_perplexity{suffix}"] = float(entropy.exp())
            q.reset_usage()
        elapsed = time.perf_counter() - self._window_start
        record["clips_per_s"] = steps * self.config.data.batch_size * self.info.world_size / max(elapsed, 1e-9)
        self.log.write("train", self.step, self.epoch, record)
        self._window, self._window_steps, self._window_start = {}, 0, time.perf_counter()


# ----------------------------------------------------------------------------- entry points


def train(config: Config, *, resume: str | Path | None = None, on_step: Callable[[int], None] | None = None,
          allow_import: bool = False) -> dict:
    """Train as `config` says; returns a summary (steps, epochs, best metric, output dir).

    resume: a checkpoint path, "auto" (OUTPUT_DIR/last.pt if present) or None (fresh start; refused
    when OUTPUT_DIR already holds a last.pt). on_step(step) runs after every optimizer step (tests
    use it to interrupt a run). allow_import: the config may name a package.module:factory
    separator (the user passed it with --allow-import). Under torchrun (WORLD_SIZE > 1) the
    process group is set up here. Temp files of checkpoint writes killed mid-way are removed.
    """
    owns_group = not dist_utils.initialized()
    info = dist_utils.setup(config.train.device)
    try:
        out = Path(config.output_dir)
        checkpoint = resolve_resume(str(resume) if resume is not None else None, out)
        if checkpoint is None and (out / LAST).is_file():
            raise UserError(f"{out / LAST} exists: pass --resume auto to continue that run, or set another output_dir")
        if info.is_main:
            prepare_output(out, config, fresh=checkpoint is None)
        dist_utils.barrier()
        trainer = Trainer(config, info, on_step, allow_import)
        try:
            if checkpoint is not None:
                trainer.resume(checkpoint)
            elif resume == "auto":
                _note(f"--resume auto: no {out / LAST}, starting a new run", info)
            return trainer.run()
        finally:
            trainer.log.close()
    finally:
        if owns_group:
            dist_utils.cleanup()
