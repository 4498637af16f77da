"""`avseg study`: every row x seed of a spec trained as an ordinary run, measured, aggregated.

    DIR/spec.yaml                       the resolved spec (a resumed study must match it)
    DIR/data/bench/                     the synthetic benchmark (AVSS layout), reused when it matches
    DIR/data/snr_{value}/               its test split re-mixed at one SNR (same scenes and sources)
    DIR/audio_encoder.pt                the tiny audio encoder pretrained on the train split's tags
    DIR/runs/{row}/seed{seed}/          an `avseg train` run directory (+ measure.json, tokens.npz)
    DIR/results.json, results.md, report.html

Killed at any point, the same command resumes: finished runs are kept, a half-trained run goes on
from its last.pt, a trained but unmeasured run is only measured. `jobs=N` trains N runs at once,
each in its own process with 1/N of the threads (`avseg.study.parallel`).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from avseg.errors import UserError
from avseg.study.spec import StudySpec, run_config, run_folder, spec_to_dict

TRAIN_DONE = "train_done.json"
MEASURE = "measure.json"
TOKENS = "tokens.npz"


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def synth_config(spec: StudySpec, snr_db: float | None = None):
    from avseg.data.synth.config import tier_config

    b = spec.benchmark
    options = {"clips": b.clips, "image_size": b.image_size, "num_classes": b.num_classes,
               "avss_subsets": tuple(b.subsets), "seed": b.seed}
    if snr_db is not None:
        options["snr_db"] = (float(snr_db), float(snr_db))
    return tier_config(b.tier, **options)


def _complete_synth(root: Path, wanted: dict) -> bool:
    try:
        info = json.loads((root / "_synth" / "info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(info.get("complete")) and info.get("config") == wanted


def ensure_data(spec: StudySpec, root: Path, *, snr_db: float | None = None, log=print) -> Path:
    """Generate the benchmark (or its test split at `snr_db`) into `root` unless it is already there."""
    from avseg.data.synth import generate

    config = synth_config(spec, snr_db)
    if _complete_synth(root, config.to_dict()):
        return root
    what = "benchmark" if snr_db is None else f"test split at {snr_db:g} dB"
    log(f"[study] generating the {what} into {root}")
    generate("avss", root, config, splits=None if snr_db is None else ("test",))
    return root


def ensure_audio_encoder(spec: StudySpec, out: Path, data_root: Path, log=print) -> Path | None:
    """Pretrain (once) the tiny audio encoder every row then uses frozen."""
    if not spec.audio_pretrain.enabled:
        return None
    path = out / "audio_encoder.pt"
    if path.is_file():
        return path
    from avseg.engine.audio_pretrain import pretrain_audio

    config = run_config(spec, spec.rows[0].name, spec.seeds[0], data_root, out / "runs" / "_audio", None)
    config.seed = spec.benchmark.seed
    log(f"[study] pretraining the audio encoder on the train split's tags ({spec.audio_pretrain.epochs} epochs)")
    result = pretrain_audio(config, path, epochs=spec.audio_pretrain.epochs, log=lambda *_a, **_k: None)
    (out / "audio_encoder.json").write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    return path


class Progress:
    """Prints which run, which epoch and the time left, every `every` optimizer steps."""

    def __init__(self, total_runs: int, log=print, every: int = 25, jobs: int = 1):
        self.total_runs, self.log, self.every, self.jobs = total_runs, log, every, max(1, jobs)
        self.done_seconds: list[float] = []
        self.run_index, self.label, self.steps, self.start = 0, "", 1, time.perf_counter()
        self.first_step: int | None = None

    def begin(self, index: int, label: str, steps: int) -> None:
        self.run_index, self.label, self.steps, self.start = index, label, max(1, steps), time.perf_counter()
        self.first_step = None
        self.log(f"[study] run {index}/{self.total_runs}: {label}")

    def on_step(self, step: int) -> None:
        if self.first_step is None:
            self.first_step, self.start = step - 1, time.perf_counter()  # a resumed run starts past 0
        if step % self.every:
            return
        elapsed = time.perf_counter() - self.start
        per_step = elapsed / max(step - self.first_step, 1)
        left_runs = self.total_runs - self.run_index
        # a whole run takes all its steps, even when this one resumed past its start
        typical = np.mean(self.done_seconds) if self.done_seconds else per_step * self.steps
        left = per_step * (self.steps - step) + left_runs * typical / self.jobs
        self.log(f"[study] run {self.run_index}/{self.total_runs} {self.label}: step {step}/{self.steps}, "
                 f"{elapsed / 60:.1f} min in; about {left / 60:.0f} min left for the study")

    def finish(self, seconds: float) -> None:
        """A run is over; its time estimates the others' only when it trained from step 0 here (a
        resumed or measured-only run took a fraction of a run's time)."""
        if self.first_step == 0:
            self.done_seconds.append(seconds)
        self.first_step = None


def _steps(config) -> int:
    """Optimizer steps of the whole run (the train split's clips over the batch size, times epochs)."""
    import math

    from avseg.data.build import build_dataset

    return math.ceil(len(build_dataset(config, "train")) / config.data.batch_size) * config.train.epochs


def train_and_measure(spec: StudySpec, row: str, seed: int, out: Path, data_root: Path,
                      audio: Path | None, progress: Progress) -> dict:
    """One run: train (or resume), then measure on the test split and the SNR re-mixes. The run
    folder is locked meanwhile: a second process (another invocation, or a run left behind by a
    killed one) is refused with one line instead of writing the same files."""
    from avseg.study.lock import run_lock

    run_dir = run_folder(out, row, seed)
    config = run_config(spec, row, seed, data_root, run_dir, audio)
    with run_lock(run_dir):
        return _train_and_measure(spec, row, seed, out, data_root, audio, progress, run_dir, config)


def _train_and_measure(spec, row, seed, out, data_root, audio, progress, run_dir, config) -> dict:
    from avseg.engine.checkpoint import model_from_checkpoint
    from avseg.engine.train import train
    from avseg.study.measure import measure_model

    started = time.perf_counter()
    if not (run_dir / TRAIN_DONE).is_file():
        progress.begin(progress.run_index + 1, f"{row} seed {seed}", _steps(config))
        import torch

        summary = train(config, resume="auto", on_step=progress.on_step)
        # the thread count changes the floating-point summation order, so a rerun with other threads
        # drifts from step 1 (docs/study.md, "Reproducibility"): kept beside the time
        # a resumed run's seconds cover the steps after `resumed_from_step` only (None: no step trained here)
        (run_dir / TRAIN_DONE).write_text(json.dumps({**summary, "seconds": round(time.perf_counter() - started, 1),
                                                      "threads": torch.get_num_threads(),
                                                      "resumed_from_step": progress.first_step},
                                                     default=str) + "\n", encoding="utf-8")
    else:
        progress.run_index += 1
    trained = json.loads((run_dir / TRAIN_DONE).read_text(encoding="utf-8"))
    measure_start = time.perf_counter()
    model, stored, _ = model_from_checkpoint(run_dir / "best.pt")
    tokens = row in spec.tsne.rows and seed == spec.tsne.seed
    result = measure_model(model, stored, data_root, tokens=tokens)
    token_data = result.pop("tokens", None)
    if token_data is not None:
        np.savez_compressed(run_dir / TOKENS, tokens=token_data["tokens"],
                            meta=np.array(json.dumps(token_data["meta"])))
    if row in spec.snr.rows:
        result["snr"] = {}
        for value in spec.snr.values:
            snr_root = out / "data" / f"snr_{value:g}"
            snr = measure_model(model, stored, snr_root, shuffled=False, objects=False)
            result["snr"][f"{value:g}"] = {"miou": snr["miou"], "f": snr["f"]}
    result.update(row=row, seed=seed, train_seconds=trained.get("seconds"), train_threads=trained.get("threads"),
                  train_resumed_from_step=trained.get("resumed_from_step"),
                  measure_seconds=round(time.perf_counter() - measure_start, 1))
    (run_dir / MEASURE).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    progress.finish(time.perf_counter() - started)
    return result


def _new_keys(spec: dict) -> dict:
    """The spec's (and its rows') overrides with old flat model keys renamed (`avseg.config_compat`),
    so that a run started before the model config had sections resumes."""
    from avseg.config_compat import KeyConflict, translate_overrides

    def renamed(overrides):
        try:
            return translate_overrides(list(overrides or []))[0]
        except KeyConflict:
            return overrides  # load_config names the conflict when the run's config is read

    rows = [{**row, "overrides": renamed(row.get("overrides"))} for row in spec.get("rows", [])]
    return {**spec, "overrides": renamed(spec.get("overrides")), "rows": rows}


def _check_resume(out: Path, spec: StudySpec) -> None:
    from omegaconf import OmegaConf

    stored = out / "spec.yaml"
    wanted = spec_to_dict(spec)
    if stored.is_file():
        before = _new_keys(OmegaConf.to_container(OmegaConf.load(stored), resolve=True))
        wanted = _new_keys(wanted)
        keys = ("benchmark", "base_config", "overrides", "schedule", "audio_pretrain")
        changed = [k for k in keys if before.get(k) != wanted.get(k)]
        changed += [f"rows.{r['name']}" for r in wanted["rows"] for b in before.get("rows", [])
                    if b.get("name") == r["name"] and b.get("overrides") != r["overrides"]]
        if changed:
            raise UserError(f"{out}: holds a study run with another spec ({', '.join(changed)} differ); "
                            "give another --out or the same spec")
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(wanted), stored)


def selected_runs(spec: StudySpec, rows: list[str] | None) -> list[tuple[str, int]]:
    """The (row, seed) runs an invocation trains: all of the spec's, or those of `rows` (`--rows`)."""
    if not rows:
        return spec.runs()
    names = [row.name for row in spec.rows]
    unknown = [name for name in rows if name not in names]
    if unknown:
        raise UserError(f"--rows {','.join(unknown)}: not a row of study '{spec.name}' (its rows: {', '.join(names)})")
    return [(row, seed) for row, seed in spec.runs() if row in rows]


def run_study(spec: StudySpec, out: str | Path, *, log=print, jobs: int = 1, run_all=None,
              rows: list[str] | None = None) -> dict:
    """Run (or resume) the study into `out` (only the runs of `rows` when given); returns the
    aggregated results of every finished run. The runs to train go one after another in this
    process, or to `run_all(spec, out, data_root, audio, jobs, log=, runs=)`
    (`avseg.study.parallel.run_parallel`: `jobs` runs at once; `run_study_parallel` passes it)."""
    if jobs > 1 and run_all is None:
        raise ValueError("jobs > 1 needs a run_all (avseg.study.parallel.run_study_parallel)")
    runs = selected_runs(spec, rows)
    from avseg.study.aggregate import record_session, write_results

    out = Path(out)
    _check_resume(out, spec)
    started = time.perf_counter()
    finished_before = _finished(spec, out)
    data_root = ensure_data(spec, out / "data" / "bench", log=log)
    if spec.snr.rows:
        for value in spec.snr.values:
            ensure_data(spec, out / "data" / f"snr_{value:g}", snr_db=value, log=log)
    audio = ensure_audio_encoder(spec, out, data_root, log=log)
    failed = None
    if run_all is not None:
        try:
            run_all(spec, out, data_root, audio, jobs, log=log, runs=runs)
        except UserError as error:  # failed runs: the others are finished, so time and results are still written
            failed = error
    else:
        progress = Progress(len(runs), log)
        for row, seed in runs:
            if run_finished(out, row, seed):
                progress.run_index += 1
                continue
            train_and_measure(spec, row, seed, out, data_root, audio, progress)
    session = round(time.perf_counter() - started, 1)
    here = {**machine(), "jobs": jobs}
    record_session(out, spec, seconds=session, runs_trained=_finished(spec, out) - finished_before, machine=here)
    results = write_results(spec, out, machine=here)
    if failed is not None:
        raise failed
    return results


def run_finished(out: Path, row: str, seed: int) -> bool:
    """A run is finished when its measure.json exists (the mark resume goes by)."""
    return (run_folder(out, row, seed) / MEASURE).is_file()


def _finished(spec: StudySpec, out: Path) -> int:
    return sum(run_finished(out, row, seed) for row, seed in spec.runs())
