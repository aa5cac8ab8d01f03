"""Consistent, change-aware reads of a checkpoint's files, so the viewer never shows stale numbers.

Why: ``sae analyze`` rewrites ``feature_stats.*``, ``top_examples.*`` … one after another while a
viewer may be open. Streamlit's ``st.cache_data`` keyed only by path kept the old files forever
(a page mixed a new histogram with old frequencies until restart). Here every cached loader is
keyed by the *stamp* of the files it reads — ``(name, mtime_ns, size, inode)`` of each, ``None``
for an absent file — so a rewritten file (our writers replace files by rename: a new inode and
mtime) is a new cache key; and :func:`consistent` re-reads when any file changed during the
read, so one page is built from one version of the files.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

#: one file's identity: (mtime_ns, size, inode), or None where the file does not exist
FileStamp = tuple[int, int, int] | None
#: a directory's stamp over the names read from it
Stamp = tuple[tuple[str, FileStamp], ...]


def file_stamp(path: Path) -> FileStamp:
    """(mtime_ns, size, inode) of ``path``, or None where it is absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def stamp(directory: Path, names: Iterable[str]) -> Stamp:
    """The stamp of the files ``names`` in ``directory`` (sorted by name; absent files included)."""
    return tuple((name, file_stamp(directory / name)) for name in sorted(set(names)))


class ChangingFilesError(RuntimeError):
    """The files kept changing across every attempt at a consistent read."""


def consistent(read: Callable[[], T], directory: Path, names: Iterable[str], tries: int = 5,
               pause_s: float = 0.2) -> tuple[Stamp, T]:
    """Run ``read()`` until the stamp of ``names`` is the same before and after it.

    Returns (stamp, value): the value was read from exactly the files of that stamp. A reader that
    fails because a file vanished or was half-replaced under it (OSError, ValueError) is retried
    like a changed stamp. After ``tries`` attempts it raises :class:`ChangingFilesError` (an
    analysis writing for that long: the page says so and asks for a reload).
    """
    names = list(names)
    last: Exception | None = None
    for attempt in range(tries):
        before = stamp(directory, names)
        try:
            value = read()
        except (OSError, ValueError) as e:  # a file replaced mid-read
            last = e
        else:
            if stamp(directory, names) == before:
                return before, value
        if attempt + 1 < tries:
            time.sleep(pause_s)
    raise ChangingFilesError(f"the files of {directory} changed during every one of {tries} reads "
                             f"(is `sae analyze` still writing them?); reload the page when it is done"
                             + (f": {last}" if last else ""))
