"""One synthetic clip: scene sampling, frame rendering, ground truth and audio, no file writing.

A scene holds 2..8 objects of distinct classes over a textured background. Which objects sound,
and in which seconds, is drawn independently of how they look, where they are, how big they are
and how they move, so the frames alone cannot tell a sounding object from a silent one; only
the audio can.

- single-source clip: one object, chosen uniformly, sounds in every second; the others are silent.
- multi-source clip: k >= 2 source objects (at most all but one when the scene has 3+ objects,
  and at most `max_sources`); each switches on or off per second (p = 0.6), at least one sounds
  in most seconds (a silent second is kept with probability 0.15) and every source sounds at
  least once.
- off-screen sound (a share `offscreen_share` of the clips): a class absent from the scene
  sounds in some seconds (p = 0.6, at least one); it is in the mix, never in the labels. It is
  drawn from a fourth random stream, so the scene, the schedule and the on-screen sounds are the
  same with or without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from avseg.data.synth.classes import ClassBank, SynthClass
from avseg.data.synth.config import SynthConfig
from avseg.data.synth.shapes import Placement, paint_object
from avseg.data.synth.sounds import SAMPLE_RATE, background_noise, jitter_sound, mix_clip, render_sound

RADIUS_RANGE = (0.12, 0.22)  # object radius, share of the image size
MAX_DRIFT = 0.035  # largest motion per frame, share of the image size
P_ON = 0.6  # chance a source sounds in a given second (multi-source clips)
P_KEEP_SILENT_SECOND = 0.15
FRAME_GRAIN = 2.0  # per-frame sensor noise, grey levels (std)


@dataclass(frozen=True)
class SynthObject:
    """One object of a scene. `sounding[t]` says whether it sounds in second (frame) t."""

    class_id: int
    name: str
    sounding: tuple[bool, ...]
    radius: float
    depth: int  # drawing order: higher is on top


@dataclass(frozen=True)
class SynthClip:
    """A rendered clip; object i has instance index i + 1 in `instances`.

    Attributes:
        frames: uint8 `[T, H, W, 3]`.
        waveform: float32 `[T * 16000]`, 16 kHz mono, peak 0.891.
        semantic: int32 `[T, H, W]`, class id of the objects sounding in second t, 0 elsewhere.
        instances: uint8 `[T, H, W]`, instance index of every visible object (0 = background).
        objects: the object table.
        snr_db: one source's power over the background noise power.
        multi_source: whether the clip was drawn as a multi-source clip.
        offscreen_class: class id of the off-screen sound, or -1 when the clip has none.
        offscreen_sounding: bool `[T]`, the seconds in which the off-screen sound is heard.
    """

    frames: np.ndarray
    waveform: np.ndarray
    semantic: np.ndarray
    instances: np.ndarray
    objects: tuple[SynthObject, ...]
    snr_db: float
    multi_source: bool
    offscreen_class: int = -1
    offscreen_sounding: tuple[bool, ...] = ()

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def class_ids(self) -> np.ndarray:
        """int64 `[N]`, class id of each object."""
        return np.array([obj.class_id for obj in self.objects], dtype=np.int64)

    @property
    def sounding(self) -> np.ndarray:
        """bool `[N, T]`."""
        return np.array([obj.sounding for obj in self.objects], dtype=bool).reshape(len(self.objects), -1)

    def sounding_names(self) -> list[str]:
        """Names of the classes that sound at least once, by class id."""
        return [obj.name for obj in sorted(self.objects, key=lambda o: o.class_id) if any(obj.sounding)]


def _on_off(count: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Per-second flags of `count` sources, bool `[count, num_frames]` (p = 0.6 each)."""
    return rng.random((count, num_frames)) < P_ON


def _schedule(num_objects: int, num_frames: int, multi_source: bool, rng: np.random.Generator,
              max_sources: int | None = None) -> np.ndarray:
    """Sounding flags, bool `[num_objects, num_frames]`."""
    sounding = np.zeros((num_objects, num_frames), dtype=bool)
    if not multi_source:
        sounding[rng.integers(num_objects)] = True
        return sounding
    most = max(2, num_objects - 1) if max_sources is None else max(2, min(num_objects - 1, max_sources))
    count = int(rng.integers(2, most + 1))
    sources = rng.permutation(num_objects)[:count]
    flags = _on_off(count, num_frames, rng)
    for second in range(num_frames):
        if not flags[:, second].any() and rng.random() >= P_KEEP_SILENT_SECOND:
            flags[rng.integers(count), second] = True
    for row in range(count):
        if not flags[row].any():
            flags[row, rng.integers(num_frames)] = True
    sounding[sources] = flags
    return sounding


def _place(radii: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Start centres `[N, 2]` (x, y) that overlap at most partly (rejection sampling)."""
    centres = np.zeros((len(radii), 2))
    for index, radius in enumerate(radii):
        best, best_score = None, -np.inf
        for _ in range(40):
            candidate = rng.uniform(1.05 * radius, size - 1.05 * radius, size=2)
            if index == 0:
                best = candidate
                break
            gaps = np.linalg.norm(centres[:index] - candidate, axis=1) / (radii[:index] + radius)
            score = float(gaps.min())
            if score > best_score:
                best, best_score = candidate, score
            if score >= 0.8:
                break
        centres[index] = best
    return centres


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Textured, low-saturation background: float32 `[size, size, 3]`.

    A grey-ish base colour plus three octaves of value noise (bilinear upsampling of random grids,
    done by PIL: fast, deterministic and free of BLAS threads).
    """
    base = rng.uniform(70, 180) + rng.uniform(-20, 20, size=3)
    image = np.empty((size, size, 3), dtype=np.float32)
    image[:] = base
    for cells, amplitude in ((3, 35.0), (9, 16.0), (max(2, size // 8), 8.0)):
        grid = rng.uniform(-1, 1, size=(cells + 1, cells + 1, 1)) * amplitude
        grid = (grid + rng.uniform(-0.25, 0.25, size=(cells + 1, cells + 1, 3)) * amplitude).astype(np.float32)
        for channel in range(3):
            layer = Image.fromarray(np.ascontiguousarray(grid[:, :, channel])).resize((size, size), Image.BILINEAR)
            image[:, :, channel] += np.asarray(layer, dtype=np.float32)
    return image


def _render(classes: list[SynthClass], radii: np.ndarray, num_frames: int, size: int,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames uint8 `[T, H, W, 3]`, instance maps uint8 `[T, H, W]` (object i -> i + 1), draw order."""
    count = len(classes)
    start = _place(radii, size, rng)
    velocity = rng.uniform(-MAX_DRIFT, MAX_DRIFT, size=(count, 2)) * size
    angle0 = np.deg2rad(rng.uniform(-15, 15, size=count))
    spin = np.deg2rad(rng.uniform(-2, 2, size=count))
    rgb = [np.clip(np.array(c.rgb, float) + rng.uniform(-12, 12, size=3), 0, 255) for c in classes]
    phase = rng.uniform(0, 2, size=(count, 2))
    order = rng.permutation(count)  # drawing order, bottom first
    background = _background(size, rng)
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    instances = np.zeros((num_frames, size, size), dtype=np.uint8)
    for t in range(num_frames):
        frame = background + rng.normal(0.0, FRAME_GRAIN, size=(size, size, 1)).astype(np.float32)
        centres = np.clip(start + velocity * t, 0.6 * radii[:, None], size - 0.6 * radii[:, None])
        for i in order:
            place = Placement(float(centres[i, 0]), float(centres[i, 1]), float(radii[i]),
                              float(angle0[i] + spin[i] * t))
            paint_object(frame, instances[t], i + 1, place, classes[i].shape, classes[i].texture,
                         rgb[i], (float(phase[i, 0]), float(phase[i, 1])))
        frames[t] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    return frames, instances, order


def _audio(classes: list[SynthClass], sounding: np.ndarray, snr_db: float,
           rng: np.random.Generator, offscreen: tuple[SynthClass, np.ndarray, np.random.Generator] | None = None
           ) -> np.ndarray:
    """The clip's waveform, float32 `[T * 16000]`; `offscreen` = (class, flags [T], its generator)."""
    num_samples = sounding.shape[1] * SAMPLE_RATE
    sources, gains = [], []
    for cls, on in zip(classes, sounding):
        if on.any():
            primary, params = jitter_sound(cls.sound, rng)
            sources.append(render_sound(cls.sound.family, primary, params, num_samples, rng))
            gains.append(10.0 ** (rng.uniform(-2.0, 2.0) / 20.0))
    noise = background_noise(num_samples, rng)
    active = sounding[sounding.any(axis=1)]
    if offscreen is not None:
        cls, on, off_rng = offscreen
        primary, params = jitter_sound(cls.sound, off_rng)
        sources.append(render_sound(cls.sound.family, primary, params, num_samples, off_rng))
        gains.append(10.0 ** (off_rng.uniform(-2.0, 2.0) / 20.0))
        active = np.concatenate([active, on[None]])
    return mix_clip(sources, np.array(gains), active, noise, snr_db)


def _offscreen(class_bank: ClassBank, visible: np.ndarray, num_frames: int, share: float,
               rng: np.random.Generator) -> tuple[SynthClass, np.ndarray] | None:
    """An off-screen sound for this clip (a class not in `visible`, per-second flags), or None."""
    if share <= 0 or rng.random() >= share:
        return None
    hidden = [k for k in range(len(class_bank)) if k not in set(int(v) for v in visible)]
    if not hidden:
        return None
    flags = _on_off(1, num_frames, rng)[0]
    if not flags.any():
        flags[rng.integers(num_frames)] = True
    return class_bank[int(hidden[int(rng.integers(len(hidden)))])], flags


def _streams(rng_seed) -> list[np.random.Generator]:
    """Four independent generators (scene, sounding schedule, audio, off-screen sound) from one clip seed.

    Derived statelessly (no `SeedSequence.spawn`, which counts its calls), so the same seed object
    gives the same clip every time. Pixels come from the scene stream alone: who sounds cannot
    leave a trace in the frames.
    """
    seq = rng_seed if isinstance(rng_seed, np.random.SeedSequence) else np.random.SeedSequence(rng_seed)
    return [
        np.random.default_rng(np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, stream)))
        for stream in range(4)
    ]


def synthesize_clip(config: SynthConfig, class_bank: ClassBank, rng_seed, num_frames: int,
                    multi_source: bool) -> SynthClip:
    """Draw and render one clip.

    Args:
        config: uses `image_size`, `objects` and `snr_db`.
        class_bank: from `build_class_bank(seed, num_classes)`.
        rng_seed: an int, a sequence of ints or a `numpy.random.SeedSequence` (the generator
            passes `SeedSequence(seed, spawn_key=(0, clip_index))`).
        num_frames: T, frames = seconds.
        multi_source: draw a multi-source clip.
    """
    scene_rng, schedule_rng, audio_rng, offscreen_rng = _streams(rng_seed)
    low, high = config.objects
    if low < 2 or high < low or high > len(class_bank):
        raise ValueError(f"objects {low},{high}: need 2 <= min <= max <= {len(class_bank)} classes")
    count = int(scene_rng.integers(low, high + 1))
    picked = scene_rng.permutation(len(class_bank))[:count]
    classes = [class_bank[int(k)] for k in picked]
    radii = scene_rng.uniform(*RADIUS_RANGE, size=count) * config.image_size
    frames, instances, order = _render(classes, radii, num_frames, config.image_size, scene_rng)
    sounding = _schedule(count, num_frames, multi_source, schedule_rng, config.max_sources)
    snr_db = float(audio_rng.uniform(*config.snr_db))
    offscreen = _offscreen(class_bank, picked, num_frames, config.offscreen_share, offscreen_rng)
    waveform = _audio(classes, sounding, snr_db, audio_rng,
                      None if offscreen is None else (*offscreen, offscreen_rng))
    lookup = np.zeros((num_frames, count + 1), dtype=np.int32)
    lookup[:, 1:] = np.where(sounding.T, [c.class_id for c in classes], 0)
    semantic = np.take_along_axis(lookup, instances.reshape(num_frames, -1).astype(np.int64), axis=1)
    depth = np.argsort(order)
    objects = tuple(
        SynthObject(c.class_id, c.name, tuple(bool(x) for x in sounding[i]), float(radii[i]), int(depth[i]))
        for i, c in enumerate(classes)
    )
    off_class, off_flags = (-1, ()) if offscreen is None else (offscreen[0].class_id, tuple(bool(x) for x in offscreen[1]))
    return SynthClip(frames, waveform, semantic.reshape(instances.shape), instances, objects, snr_db,
                     bool(multi_source), off_class, off_flags)
