"""`avseg check-data --layout single_plus_cavp`: every csv row, frame, label and wav of a Single+
folder in CAVP's layout (`avseg.data.single_plus`), one problem per bad file, never stopping."""

from __future__ import annotations

from pathlib import Path

from avseg.data.problems import Problem, error_reason, relative
from avseg.data.single_plus import find_csv, paths, read_label, read_rows
from avseg.errors import UserError


def _image_size(path: Path, what: str) -> tuple[tuple[int, int] | None, str | None]:
    """((width, height) or None, the problem or None) of an image file."""
    from PIL import Image

    if not path.is_file():
        return None, f"missing {what}"
    try:
        with Image.open(path) as image:
            image.load()
            return image.size, None
    except Exception as err:  # PIL raises many types for damaged files
        return None, f"damaged {what}, cannot be decoded ({error_reason(err, path)})"


def _label_problem(path: Path, frame_size: tuple[int, int] | None, salient: bool) -> str | None:
    size, problem = _image_size(path, "label")
    if problem:
        return problem
    try:
        label = read_label(path, salient)
    except UserError as err:
        return error_reason(err, path)
    if frame_size is not None and (label.shape[1], label.shape[0]) != frame_size:
        return f"label is {size[0]}x{size[1]}, the frame is {frame_size[0]}x{frame_size[1]}"
    return None


def _audio_problem(path: Path) -> str | None:
    if not path.is_file():
        return "missing audio file"
    from avseg.audio import load_audio

    try:
        load_audio(path)
    except Exception as err:
        return f"audio cannot be decoded ({error_reason(err, path)})"
    return None


def check_single_plus(root: Path) -> tuple[list[Problem], int, int]:
    """(problems, rows checked, rows with a problem) of a Single+ folder in CAVP's layout."""
    root = Path(root)
    try:
        csv_path = find_csv(root)
        rows, errors = read_rows(csv_path)
    except UserError as err:
        return [Problem(".", str(err).replace(f"{root}/", "").replace(str(root), "."))], 0, 0
    problems = [Problem(relative(csv_path, root), message) for message in errors]
    bad = 0
    for row in rows:
        files = paths(root, row.name)
        found: list[Problem] = []
        frame_size, problem = _image_size(files["frame"], "frame")
        if problem:
            found.append(Problem(relative(files["frame"], root), problem))
        for kind in ("label", "salient"):
            if kind == "label" or files[kind].parent.is_dir():  # salient labels are optional
                problem = _label_problem(files[kind], frame_size, kind == "salient")
                if problem:
                    found.append(Problem(relative(files[kind], root), problem))
        problem = _audio_problem(files["audio"])
        if problem:
            found.append(Problem(relative(files["audio"], root), problem))
        problems.extend(found)
        bad += bool(found)
    return problems, len(rows), bad
