"""Options of the synthetic benchmark (`SynthConfig`) and their validation against a layout.

Frames and sources per layout (fixed by what the official layout holds):

    s4     5 frames, single-source clips only
    ms3    5 frames, multi-source clips (share `multi_source_share`, default 1.0)
    avss   subset v1s: 5 frames, single-source; v1m: 5 frames, multi-source;
           v2: 10 frames, multi-source share `multi_source_share` (default 0.5).
           `avss_subsets` picks the subsets (default all three); `frames` 5 is short for
           v1s,v1m and 10 for v2. Clips are dealt to the chosen subsets in turn.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

from avseg.data.layouts import AVSBENCH_FRAMES, AVSS_FRAMES, AVSS_SUBSETS, LAYOUTS
from avseg.data.palette import AVSS_NUM_CLASSES
from avseg.data.synth.classes import MAX_CLASSES
from avseg.errors import UserError

MAX_OBJECTS = 8
DEFAULT_MULTI_SHARE = {"ms3": 1.0, "v2": 0.5}


@dataclass(frozen=True)
class SynthConfig:
    """Every option of `avseg synth` (CLI flag in brackets).

    Attributes:
        seed: base seed [--seed]; clip i is seeded from (seed, i).
        clips: number of clips [--clips].
        image_size: frame height = width in pixels [--image-size].
        num_classes: classes in the bank, background excluded [--num-classes].
        objects: (min, max) objects per scene, sounding and silent [--objects].
        multi_source_share: share of multi-source clips where the layout leaves it open (MS3,
            AVSS v2); None = layout default [--multi-source-share].
        snr_db: (min, max) SNR of one source over the background noise, dB [--snr-db].
        frames: frames (= seconds) per clip; None = layout default [--frames].
        avss_subsets: AVSS subsets to write; None = from `frames`, else all [--avss-subsets].
        split: train/val/test shares, normalised to sum 1 [--split].
        workers: processes; None = min(2, cpus); never changes the output [--workers].
        max_sources: at most this many source objects in a multi-source clip; None = all but
            one of the scene's objects [--max-sources].
        offscreen_share: share of clips that also carry an off-screen sound: a class that is not
            in the scene sounds in some seconds, is heard in the mix and is never labelled
            [--offscreen-share].
    """

    seed: int = 0
    clips: int = 100
    image_size: int = 224
    num_classes: int = 12
    objects: tuple[int, int] = (2, 4)
    multi_source_share: float | None = None
    snr_db: tuple[float, float] = (0.0, 20.0)
    frames: int | None = None
    avss_subsets: tuple[str, ...] | None = None
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    workers: int | None = None
    max_sources: int | None = None
    offscreen_share: float = 0.0

    def to_dict(self) -> dict:
        """The options that decide the data (everything but `workers`), JSON-ready."""
        out = asdict(self)
        out.pop("workers")
        return {key: list(value) if isinstance(value, tuple) else value for key, value in out.items()}


# Difficulty tiers (`--tier`, docs/synth.md): the SNR of one source over the noise, fixed per tier;
# all tiers show 2-5 objects with 1-4 simultaneous sources, visible silent objects and, in a
# quarter of the clips, an off-screen sound.
TIERS = {"easy": 10.0, "medium": 0.0, "hard": -5.0}
TIER_OPTIONS = {"objects": (2, 5), "max_sources": 4, "offscreen_share": 0.25}


def tier_config(tier: str, **options) -> SynthConfig:
    """The `SynthConfig` of a difficulty tier ("easy", "medium", "hard"); `options` override."""
    if tier not in TIERS:
        raise UserError(f"--tier must be one of {', '.join(TIERS)}, got {tier!r}")
    values = dict(TIER_OPTIONS, snr_db=(TIERS[tier], TIERS[tier]))
    values.update(options)
    return SynthConfig(**values)


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def _check_counts(layout: str, config: SynthConfig) -> None:
    if config.seed < 0:
        raise UserError(f"--seed must be >= 0, got {config.seed}")
    if config.clips < 1:
        raise UserError(f"--clips must be >= 1, got {config.clips}")
    if not 32 <= config.image_size <= 2048:
        raise UserError(f"--image-size must lie in [32, 2048], got {config.image_size}")
    limit = AVSS_NUM_CLASSES - 1 if layout == "avss" else MAX_CLASSES
    why = " (the AVSS palette has 71 colours, background included)" if layout == "avss" else ""
    if not 2 <= config.num_classes <= limit:
        raise UserError(
            f"--num-classes must lie in [2, {limit}] for {layout}{why}; scenes need a sounding and a "
            f"silent class; got {config.num_classes}"
        )
    low, high = config.objects
    if low < 2 or low > high:
        raise UserError(
            f"--objects min,max needs 2 <= min <= max (every scene shows a silent object beside "
            f"the sounding one), got {low},{high}"
        )
    if high > min(MAX_OBJECTS, config.num_classes):
        raise UserError(
            f"--objects max {high} is too large: one instance per class per scene allows at most "
            f"min({MAX_OBJECTS}, --num-classes {config.num_classes})"
        )
    snr_low, snr_high = config.snr_db
    if not (math.isfinite(snr_low) and math.isfinite(snr_high)) or snr_low > snr_high:
        raise UserError(f"--snr-db min,max needs finite min <= max, got {snr_low},{snr_high}")
    shares = tuple(config.split)
    if len(shares) != 3 or any(s < 0 or not math.isfinite(s) for s in shares) or sum(shares) <= 0:
        raise UserError(f"--split needs three shares train,val,test >= 0 with a positive sum, got {shares}")
    if config.max_sources is not None and config.max_sources < 1:
        raise UserError(f"--max-sources must be >= 1, got {config.max_sources}")
    if not 0.0 <= config.offscreen_share <= 1.0:
        raise UserError(f"--offscreen-share must lie in [0, 1], got {config.offscreen_share}")
    if config.offscreen_share > 0 and config.objects[1] >= config.num_classes:
        raise UserError(f"--offscreen-share needs a class that is not on screen: --objects max {config.objects[1]} "
                        f"must be below --num-classes {config.num_classes}")
    if config.workers is not None and config.workers < 1:
        raise UserError(f"--workers must be >= 1, got {config.workers}")


def _avss_subsets(config: SynthConfig) -> tuple[str, ...]:
    if config.frames not in (None, 5, 10):
        raise UserError(f"--frames must be 5 (v1s, v1m) or 10 (v2) for avss, got {config.frames}")
    if config.avss_subsets is None:
        if config.frames is None:
            return AVSS_SUBSETS
        return tuple(s for s in AVSS_SUBSETS if AVSS_FRAMES[s] == config.frames)
    subsets = tuple(config.avss_subsets)
    unknown = [s for s in subsets if s not in AVSS_SUBSETS]
    if unknown or not subsets or len(set(subsets)) != len(subsets):
        raise UserError(f"--avss-subsets must list distinct names among v1s,v1m,v2, got {','.join(subsets)}")
    if config.frames is not None and any(AVSS_FRAMES[s] != config.frames for s in subsets):
        raise UserError(
            f"--frames {config.frames} contradicts --avss-subsets {','.join(subsets)} "
            "(v1s and v1m clips have 5 frames, v2 clips 10); give only one of the two"
        )
    return subsets


def resolve_subsets(layout: str, config: SynthConfig) -> tuple[str | None, ...]:
    """Validate `config` for `layout`; the subsets to write ((None,) for S4 and MS3).

    Raises:
        UserError naming the option that is wrong and why.
    """
    if layout not in LAYOUTS:
        raise UserError(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    _check_counts(layout, config)
    share = config.multi_source_share
    if share is not None and not 0.0 <= share <= 1.0:
        raise UserError(f"--multi-source-share must lie in [0, 1], got {share}")
    if layout != "avss":
        if config.frames not in (None, AVSBENCH_FRAMES):
            raise UserError(f"--frames must be {AVSBENCH_FRAMES} for {layout}: its layout fixes 5 frames per clip")
        if config.avss_subsets is not None:
            raise UserError(f"--avss-subsets applies to --layout avss only, not {layout}")
        if layout == "s4" and share:
            raise UserError("--multi-source-share must be 0 for s4: S4 clips are single-source")
        subsets: tuple[str | None, ...] = (None,)
    else:
        subsets = _avss_subsets(config)
        if share is not None and "v2" not in subsets:
            raise UserError(
                "--multi-source-share applies to AVSS v2 clips only (v1s is single-source and v1m "
                "multi-source by definition); add v2 to --avss-subsets or drop the option"
            )
    return subsets


def multi_share(layout: str, subset: str | None, config: SynthConfig) -> float:
    """Share of multi-source clips in one layout / AVSS subset."""
    if layout == "s4" or subset == "v1s":
        return 0.0
    if subset == "v1m":
        return 1.0
    if config.multi_source_share is not None:
        return config.multi_source_share
    return DEFAULT_MULTI_SHARE["ms3" if layout == "ms3" else "v2"]


def frames_per_clip(layout: str, subset: str | None) -> int:
    return AVSS_FRAMES[subset] if layout == "avss" and subset else AVSBENCH_FRAMES
