"""`avseg check-data`: check every clip of an S4, MS3, AVSS (or VPO) folder and list bad files.

Every file a reader would open is opened here too, through the same `layouts` paths: metadata
csv (required columns), frames (present, fully decodable, one size per clip), ground-truth masks
where the layout has them (decodable, same size as the frames; AVSS: every colour inside the
palette and every class id in `label2idx.json`), and the wav (present, decodable, not empty,
long enough). The checker never stops at a bad file: every problem comes back in one run, each
naming its file relative to ROOT. Log-mel pickles are not opened (unpickling runs code).

Audio length: clip frame t is second t, so T frames need T seconds. Audio shorter than T - 1 s
leaves at least one frame with no audio at all (the readers pad it with silence): reported as a
"warning:" problem. Audio between T - 1 and T s is accepted (the last second is padded).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from avseg.data import layouts
from avseg.data.layouts import ClipFiles, LayoutError
from avseg.data.palette import AVSS_NUM_CLASSES, rgb_to_ids
from avseg.data.problems import Problem, error_reason, relative
from avseg.errors import UserError

CHECK_LAYOUTS = ("s4", "ms3", "avss", "vpo", "single_plus_cavp")
PROGRESS_MIN_CLIPS = 100  # show a progress bar from this many clips on
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ROOT_FOLDERS = {"s4": "Single-source", "ms3": "Multi-sources", "avss": "AVSBench_semantic"}


@dataclass
class CheckReport:
    """What one run found: problems, clips checked, clips with at least one problem (None: unknown)."""

    problems: list[Problem]
    clips_checked: int
    clips_with_problems: int | None


@dataclass(frozen=True)
class LabelPalette:
    """AVSS label context: palette size and the class ids `label2idx.json` defines (None: unreadable)."""

    num_classes: int
    class_ids: frozenset[int] | None


def check_dataset(layout: str, root: Path, progress: bool = False) -> tuple[list[Problem], int]:
    """Check every clip of `root` in `layout` ("s4", "ms3", "avss" or "vpo").

    Returns (problems, number of clips checked). Raises UserError when `root` is not a folder or
    the layout is unknown; anything wrong inside the data set is a `Problem`, never an exception.
    """
    report = run_checks(layout, root, progress=progress)
    return report.problems, report.clips_checked


def run_checks(layout: str, root: Path, progress: bool = False) -> CheckReport:
    """`check_dataset` with the number of clips that have problems (for the summary line)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: data set folder not found" if not root.exists() else f"{root}: not a folder")
    if layout == "vpo":
        return _check_vpo(root)
    if layout == "single_plus_cavp":
        from avseg.data.single_plus_check import check_single_plus

        return CheckReport(*check_single_plus(root))
    if layout not in layouts.LAYOUTS:
        raise UserError(f"unknown layout {layout!r}; expected one of {', '.join(CHECK_LAYOUTS)}")
    problems: list[Problem] = []
    meta = layouts.metadata_path(root, layout)
    try:
        clips = layouts.list_clips(root, layout, problems=problems)
    except LayoutError as err:
        message = error_reason(err, meta)
        if not meta.is_file():
            message += f"; is ROOT the {ROOT_FOLDERS[layout]} folder of the release?"
        return CheckReport([Problem(relative(meta, root), message)], 0, 0)
    clips = [clip for clip in clips if _known_split(clip, meta, root, problems)]
    if not clips:
        problems.append(Problem(relative(meta, root), "lists no usable clips"))
    palette = _read_palette(root, problems) if layout == "avss" else None
    bad_clips = 0
    for clip in _progress(clips, layout, progress):
        try:
            found = check_clip(clip, root, palette)
        except Exception as err:  # a last guard: one clip never stops the run
            folder = clip.frames[0].parent
            found = [Problem(relative(folder, root), f"clip could not be checked ({type(err).__name__}: {err})")]
        problems.extend(found)
        bad_clips += bool(found)
    return CheckReport(problems, len(clips), bad_clips)


def _known_split(clip: ClipFiles, meta: Path, root: Path, problems: list[Problem]) -> bool:
    if clip.split in layouts.SPLITS:
        return True
    problems.append(Problem(
        relative(meta, root),
        f"line {clip.csv_row}: unknown split {clip.split!r} for clip {clip.clip_id}; expected train, val or test",
    ))
    return False


def _progress(clips: list[ClipFiles], layout: str, progress: bool):
    if not progress or len(clips) < PROGRESS_MIN_CLIPS:
        return clips
    from tqdm import tqdm

    return tqdm(clips, desc=f"check-data {layout}", unit="clip", file=sys.stderr, leave=False)


def _read_palette(root: Path, problems: list[Problem]) -> LabelPalette:
    try:
        mapping = layouts.read_label2idx(root)
    except LayoutError as err:
        problems.append(Problem(layouts.AVSS_LABELS, error_reason(err, root / layouts.AVSS_LABELS)))
        return LabelPalette(AVSS_NUM_CLASSES, None)
    ids = frozenset(mapping.values())
    return LabelPalette(max(AVSS_NUM_CLASSES, max(ids, default=0) + 1), ids)


def _check_vpo(root: Path) -> CheckReport:
    from avseg.data.vpo_check import check_vpo

    problems, count = check_vpo(root)
    return CheckReport(list(problems), int(count), None)


# ----------------------------------------------------------------------------- one clip


def check_clip(clip: ClipFiles, root: Path, palette: LabelPalette | None = None) -> list[Problem]:
    """Every problem of one clip's frames, masks and audio (never raises)."""
    problems: list[Problem] = []
    frame_size = _check_frames(clip, root, problems)
    mask_paths = [path for path in clip.masks if path is not None]
    for path in _present_files(mask_paths, root, "ground-truth mask", problems):
        _guarded(path, root, problems, lambda p=path: _check_mask(p, root, frame_size, palette, problems))
    _guarded(clip.audio, root, problems, lambda: _check_audio(clip, root, problems))
    return problems


def _guarded(path: Path, root: Path, problems: list[Problem], check) -> None:
    """Run one file's check; an unexpected exception becomes a problem of that file."""
    try:
        check()
    except Exception as err:  # the checker must keep going past anything
        problems.append(Problem(relative(path, root), f"could not be checked ({type(err).__name__}: {error_reason(err, path)})"))


def _present_files(paths: list[Path], root: Path, what: str, problems: list[Problem]) -> list[Path]:
    """The paths that exist; one problem per missing file, or one for a whole missing folder."""
    present = []
    for folder in dict.fromkeys(path.parent for path in paths):
        wanted = [path for path in paths if path.parent == folder]
        if not folder.is_dir():
            count = f"{len(wanted)} {what}s" if len(wanted) > 1 else f"a {what}"
            problems.append(Problem(relative(folder, root), f"missing folder (should hold {count})"))
            continue
        for path in wanted:
            if path.is_file():
                present.append(path)
            else:
                problems.append(Problem(relative(path, root), f"missing {what}"))
    return present


def _check_frames(clip: ClipFiles, root: Path, problems: list[Problem]) -> tuple[int, int] | None:
    """Check the frames; return the clip's frame size (that of its first decodable frame)."""
    reference: tuple[Path, tuple[int, int]] | None = None
    for path in _present_files(list(clip.frames), root, "frame", problems):
        image = _guarded_open(path, root, "frame", problems)
        if image is None:
            continue
        if reference is None:
            reference = (path, image.size)
        elif image.size != reference[1]:
            problems.append(Problem(relative(path, root), (
                f"frame is {_size(image.size)}, but {reference[0].name} of the same clip is "
                f"{_size(reference[1])}")))
    _check_frame_count(clip, root, problems)
    return None if reference is None else reference[1]


def _check_frame_count(clip: ClipFiles, root: Path, problems: list[Problem]) -> None:
    folder = clip.frames[0].parent
    if not folder.is_dir():
        return
    names = {path.name for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES}
    extra = sorted(names - {path.name for path in clip.frames})
    if extra:
        kind = f"{clip.subset} clips" if clip.subset else f"{clip.layout.upper()} clips"
        shown = ", ".join(extra[:3]) + (", ..." if len(extra) > 3 else "")
        problems.append(Problem(relative(folder, root), (
            f"holds {len(names)} frames, {kind} have {len(clip.frames)} (unexpected: {shown})")))


def _guarded_open(path: Path, root: Path, what: str, problems: list[Problem]) -> Image.Image | None:
    """Open and fully decode an image; a problem (and None) if it cannot be."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except UnidentifiedImageError:
        message = f"{what} is not a readable image (unknown format or garbage bytes)"
    except Exception as err:  # truncated data, bad chunks, decompression bombs...
        message = f"damaged {what}, cannot be decoded ({error_reason(err, path)})"
    problems.append(Problem(relative(path, root), message))
    return None


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _check_mask(
    path: Path, root: Path, frame_size: tuple[int, int] | None, palette: LabelPalette | None, problems: list[Problem]
) -> None:
    image = _guarded_open(path, root, "ground-truth mask", problems)
    if image is None:
        return
    if frame_size is not None and image.size != frame_size:
        problems.append(Problem(relative(path, root), (
            f"mask is {_size(image.size)}, but the clip's frames are {_size(frame_size)}")))
    if palette is not None and path.parent.name == layouts.AVSS_ID_LABELS:
        _check_label_ids(path, root, np.asarray(image if image.mode in ("L", "P") else image.convert("L")),
                         palette, problems)
    elif palette is not None:
        _check_label_colours(path, root, np.asarray(image.convert("RGB")), palette, problems)


def _check_label_colours(path: Path, root: Path, rgb: np.ndarray, palette: LabelPalette, problems: list[Problem]) -> None:
    """AVSS labels: every colour in the palette, every class id defined in label2idx.json."""
    ids, unknown = rgb_to_ids(rgb, palette.num_classes)
    count = int(unknown.sum())
    if count:
        colours = Counter(map(tuple, rgb[unknown].tolist())).most_common(3)
        shown = ", ".join(f"RGB{colour} x{n}" for colour, n in colours)
        more = len(np.unique(rgb[unknown], axis=0)) - len(colours)
        problems.append(Problem(relative(path, root), (
            f"{count} of {unknown.size} pixels ({100.0 * count / unknown.size:.1f}%) have colours outside "
            f"the AVSBench palette: {shown}{f' and {more} more colour(s)' if more > 0 else ''}")))
    if palette.class_ids is not None:
        undefined = sorted(set(np.unique(ids[~unknown]).tolist()) - palette.class_ids)
        if undefined:
            problems.append(Problem(relative(path, root), (
                f"class id(s) {', '.join(map(str, undefined))} are not defined in {layouts.AVSS_LABELS}")))


def _check_label_ids(path: Path, root: Path, ids: np.ndarray, palette: LabelPalette, problems: list[Problem]) -> None:
    """AVSS labels_semantic: every byte a class id of label2idx.json, or 255 (ignore)."""
    known = palette.class_ids if palette.class_ids is not None else frozenset(range(palette.num_classes))
    undefined = sorted(set(np.unique(ids).tolist()) - known - {255})
    if undefined:
        problems.append(Problem(relative(path, root), (
            f"class id(s) {', '.join(map(str, undefined[:5]))} are not defined in {layouts.AVSS_LABELS} (nor 255, ignore)")))


def _check_audio(clip: ClipFiles, root: Path, problems: list[Problem]) -> None:
    rel = relative(clip.audio, root)
    if not clip.audio.is_file():
        problems.append(Problem(rel, "missing audio file"))
        return
    from avseg.audio import load_audio

    try:
        samples, sample_rate = load_audio(clip.audio)
    except Exception as err:
        problems.append(Problem(rel, f"audio cannot be decoded ({error_reason(err, clip.audio)})"))
        return
    seconds = samples.shape[0] / float(sample_rate)
    frames = len(clip.frames)
    if seconds < frames - 1:
        problems.append(Problem(rel, (
            f"warning: audio is {seconds:.2f} s long; the clip's {frames} frames need {frames} s "
            f"(shorter than {frames - 1} s leaves a frame without any audio; readers pad with silence)")))


# ----------------------------------------------------------------------------- command line


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layout", required=True, choices=CHECK_LAYOUTS,
                        help="layout of ROOT: s4 (Single-source folder), ms3 (Multi-sources folder), "
                             "avss (AVSBench_semantic folder, also Single+), vpo (VPO folder), "
                             "single_plus_cavp (Single+ as CAVP's loader reads it: frames/, labels/, audios/, csv)")
    parser.add_argument("root", type=Path, metavar="ROOT", help="the data set folder, as unpacked")
    from avseg.cli_common import add_progress_argument

    add_progress_argument(parser, "no progress bar, and no output at all when every clip is OK", old="--quiet")


def run_cli(args: argparse.Namespace) -> int:
    """Print one line per problem and a summary; 0 = all OK, 1 = problems, 2 = bad ROOT."""
    try:
        report = run_checks(args.layout, args.root, progress=not args.no_progress)
    except UserError:
        raise
    except Exception as err:  # never a traceback
        print(f"avseg check-data: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    for problem in report.problems:
        print(problem)
    print_summary(report, quiet=args.no_progress)
    return 1 if report.problems else 0


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def print_summary(report: CheckReport, quiet: bool = False) -> None:
    if not report.problems:
        if not quiet:
            print(f"all {_plural(report.clips_checked, 'clip')} OK")
        return
    bad = report.clips_with_problems
    where = f" in {_plural(bad, 'clip')}" if bad else ""  # None: the checker does not say (VPO)
    print(f"checked {_plural(report.clips_checked, 'clip')}: {_plural(len(report.problems), 'problem')}{where}")
