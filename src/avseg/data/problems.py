"""A problem found in a data set: which file, and what is wrong with it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One damaged or missing file.

    `path` is relative to the data set root given by the user (posix separators); `message` says
    what is wrong in words a user can act on ("truncated PNG", "missing column split", ...).
    """

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def relative(path: Path, root: Path) -> str:
    """`path` relative to the data set root, with posix separators (absolute if outside it)."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).as_posix()


def error_reason(err: BaseException, path: Path) -> str:
    """An exception's message without the "<path>: " prefix that names the file again."""
    message = str(err) or type(err).__name__
    _, found, reason = message.partition(f"{path}: ")
    # the decoder's own text may quote the full path again: the file's name is enough there
    return (reason if found else message).replace(str(path), Path(path).name)
