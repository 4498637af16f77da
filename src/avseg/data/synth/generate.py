"""`generate`: a whole synthetic data set in an official layout, in parallel, deterministically."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from avseg import __version__
from avseg.data import layouts
from avseg.data.synth.classes import build_class_bank
from avseg.data.synth.config import SynthConfig, default_workers, resolve_subsets
from avseg.data.synth.plan import ClipPlan, clip_seed, plan_clips
from avseg.data.synth.scene import synthesize_clip
from avseg.data.synth.sounds import SAMPLE_RATE
from avseg.data.synth.writers import SYNTH_DIR, write_clip, write_label2idx, write_metadata, write_text
from avseg.errors import UserError
from avseg.progress import progress_bars_off

GENERATOR = "avseg synth"
FORMAT_VERSION = 1
# every top-level entry any layout's synth output may hold
OUTPUT_ENTRIES = frozenset({
    layouts.S4_CSV, "s4_data", layouts.MS3_CSV, "ms3_data", layouts.AVSS_CSV, layouts.AVSS_LABELS,
    *layouts.AVSS_SUBSETS, SYNTH_DIR,
})


@dataclass(frozen=True)
class SynthSummary:
    """What a run wrote: counts per split / AVSS subset, and how long it took."""

    layout: str
    out: Path
    clips: int
    splits: dict[str, int]
    subsets: dict[str, int] = field(default_factory=dict)
    multi_source_clips: int = 0
    num_classes: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        """One-line summary for the command line."""
        splits = ", ".join(f"{name} {count}" for name, count in self.splits.items())
        subsets = "".join(f", {name} {count}" for name, count in self.subsets.items())
        return (
            f"wrote {self.clips} {self.layout} clips ({splits}{subsets}; {self.multi_source_clips} "
            f"multi-source; {self.num_classes} classes) to {self.out} in {self.seconds:.1f} s"
        )


def _is_synth_output(out: Path) -> bool:
    try:
        info = json.loads((out / SYNTH_DIR / "info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("generator") == GENERATOR


def prepare_out(out: Path) -> None:
    """Make `out` ready: create it, or clear an earlier synth output; refuse anything else."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not _is_synth_output(out):
            raise UserError(
                f"--out {out}: folder is not empty and is not an earlier `avseg synth` output "
                f"(no {SYNTH_DIR}/info.json); give an empty or new folder"
            )
        foreign = sorted(entry.name for entry in out.iterdir() if entry.name not in OUTPUT_ENTRIES)
        if foreign:
            raise UserError(
                f"--out {out}: earlier synth output that also holds other files ({', '.join(foreign[:5])}); "
                "move them away or give another folder"
            )
        try:
            for entry in sorted(out.iterdir()):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        except OSError as err:
            raise UserError(f"--out {out}: cannot clear the earlier synth output ({err})") from err
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"--out {out}: cannot create folder ({err})") from err


def _info(layout: str, config: SynthConfig, subsets, bank, summary: SynthSummary | None) -> str:
    info = {
        "generator": GENERATOR,
        "version": __version__,
        "format": FORMAT_VERSION,
        "layout": layout,
        "complete": summary is not None,
        "config": config.to_dict(),
        "subsets": [s for s in subsets if s],
        "sample_rate": SAMPLE_RATE,
        "clip_extras": "_synth/clips/{clip_id}.npz: instances uint8 [T,H,W] (object i -> i+1), "
                       "class_ids int16 [N], sounding bool [N,T], depth int16 [N], snr_db, multi_source, "
                       "offscreen_class int16 (-1: none), offscreen_sounding bool [T]",
        "classes": [cls.to_dict() for cls in bank],
    }
    if summary is not None:
        info["counts"] = {"clips": summary.clips, "splits": summary.splits, "subsets": summary.subsets,
                          "multi_source": summary.multi_source_clips}
    return json.dumps(info, indent=2) + "\n"


_WORKER: dict = {}
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _init_worker(layout: str, out: str, config: SynthConfig) -> None:
    _WORKER.update(layout=layout, out=Path(out), config=config,
                   bank=build_class_bank(config.seed, config.num_classes))


def _make_clip(plan: ClipPlan) -> list[str]:
    """Synthesise and write one clip (in a worker or in-process); its metadata row."""
    config = _WORKER["config"]
    clip = synthesize_clip(config, _WORKER["bank"], clip_seed(config.seed, plan.index), plan.num_frames,
                           plan.multi_source)
    return write_clip(_WORKER["out"], _WORKER["layout"], plan, clip)


@contextmanager
def _one_blas_thread():
    """Start workers with one BLAS / OpenMP thread each: the processes already share the cores."""
    saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    os.environ.update({name: "1" for name in _THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _run_all(layout: str, out: Path, config: SynthConfig, plans: list[ClipPlan], progress: bool) -> list:
    workers = min(config.workers or default_workers(), len(plans))
    bar = tqdm(total=len(plans), desc=f"synth {layout}", unit="clip", disable=not progress or progress_bars_off())
    rows = []
    try:
        if workers <= 1:
            _init_worker(layout, str(out), config)
            for plan in plans:
                rows.append(_make_clip(plan))
                bar.update()
        else:
            context = multiprocessing.get_context("spawn")
            with _one_blas_thread(), context.Pool(workers, _init_worker, (layout, str(out), config)) as pool:
                chunk = max(1, min(16, len(plans) // (8 * workers)))
                for row in pool.imap(_make_clip, plans, chunksize=chunk):
                    rows.append(row)
                    bar.update()
    finally:
        bar.close()
        _WORKER.clear()
    return rows


def generate(layout: str, out: Path, config: SynthConfig, progress: bool = False,
             splits: tuple[str, ...] | None = None) -> SynthSummary:
    """Write `config.clips` synthetic clips into `out` in the official `layout` (s4, ms3, avss).

    Same (layout, config) -> the same bytes in every file, whatever `config.workers`. `splits`
    writes only the clips of those splits (the same clips, ids and bytes as a full run would
    write): e.g. the test split re-mixed at another SNR (`snr_db=(x, x)`: same scenes, sources
    and noise, only their balance changes).

    Raises:
        UserError for a bad option or an unusable `out`.
    """
    started = time.perf_counter()
    out = Path(out)
    subsets = resolve_subsets(layout, config)
    plans = plan_clips(layout, config, subsets)
    if splits is not None:
        unknown = sorted(set(splits) - set(layouts.SPLITS))
        if unknown:
            raise UserError(f"splits {', '.join(unknown)}: expected some of {', '.join(layouts.SPLITS)}")
        plans = [plan for plan in plans if plan.split in splits]
    bank = build_class_bank(config.seed, config.num_classes)
    prepare_out(out)
    write_text(out / SYNTH_DIR / "info.json", _info(layout, config, subsets, bank, None))
    if layout == "avss":
        write_label2idx(out, [cls.name for cls in bank])
    rows = _run_all(layout, out, config, plans, progress)
    write_metadata(out, layout, rows)
    splits = Counter(plan.split for plan in plans)
    summary = SynthSummary(
        layout=layout, out=out, clips=len(plans),
        splits={split: splits.get(split, 0) for split in layouts.SPLITS},
        subsets=dict(Counter(plan.subset for plan in plans)) if layout == "avss" else {},
        multi_source_clips=sum(plan.multi_source for plan in plans), num_classes=len(bank),
    )
    write_text(out / SYNTH_DIR / "info.json", _info(layout, config, subsets, bank, summary))
    return replace(summary, seconds=time.perf_counter() - started)
