"""Durable file writes: a file either keeps its old contents or has all of its new ones.

Every file sae writes (training state, checkpoints, run and sweep configs, metrics rewrites,
analysis results, exports, store metadata and shard lists) goes through here. The recipe is the
one POSIX needs for a crash at any instant (``kill -9``, power loss) to leave no partial file
under the final name:

1. write to a temporary name *in the same directory* (``<name>.tmp``; a rename across
   filesystems would not be atomic),
2. flush and ``fsync`` the file (its bytes are on disk before its name is),
3. ``os.replace`` it over the final name (atomic),
4. ``fsync`` the directory (the new name itself is on disk).

A failed write removes its temporary file and re-raises, so the old file stays untouched.
Leftover ``*.tmp`` files (from a killed process) are never read and may be deleted at any time.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

TMP_SUFFIX = ".tmp"


def tmp_path(path: str | Path) -> Path:
    """The temporary name :func:`atomic_path` writes ``path`` under."""
    path = Path(path)
    return path.with_name(path.name + TMP_SUFFIX)


def fsync_file(path: str | Path) -> None:
    """Flush a file that some library wrote by name (e.g. ``safetensors.save_file``) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Make renames and new names in ``path`` durable (POSIX syncs directory entries separately).

    Best effort: filesystems or platforms that cannot fsync a directory (some network mounts,
    Windows) are skipped rather than failing a write that is otherwise complete.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, sync_dir: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write ``path`` through; on success it is fsynced and renamed.

    For libraries that write files by name::

        with atomic_path(out / "sae.safetensors") as tmp:
            save_file(tensors, str(tmp))

    ``sync_dir=False`` skips the directory fsync, for callers that rename several files and
    sync the directory once (the store's shard writer).
    """
    path = Path(path)
    tmp = tmp_path(path)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if e.errno is None:
            raise
        raise OSError(e.errno, e.strerror, str(path)) from e  # name the file, not its temporary name
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if sync_dir:
        fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, sync_dir: bool = True, **kwargs: Any) -> Iterator[IO[Any]]:
    """``open(path, mode)`` through a temporary name: readers see the old file or the whole new one.

    ``mode`` is ``"w"`` (text, UTF-8 unless ``encoding`` is given) or ``"wb"``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    if mode == "w":
        kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path, sync_dir=sync_dir) as tmp, open(tmp, mode, **kwargs) as f:
        yield f
        f.flush()


def atomic_write_bytes(path: str | Path, data: bytes | Iterable[bytes | memoryview], *, sync_dir: bool = True) -> None:
    """Write ``data`` (bytes, or chunks written in order) durably to ``path``."""
    chunks = [data] if isinstance(data, bytes | bytearray | memoryview) else data
    with atomic_open(path, "wb", sync_dir=sync_dir) as f:
        for chunk in chunks:
            f.write(chunk)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) durably to ``path``."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, doc: Any, *, indent: int = 2, sort_keys: bool = False,
                      default: Any = str) -> None:
    """Write ``doc`` as JSON durably to ``path`` (``default`` converts what JSON cannot hold)."""
    atomic_write_text(path, json.dumps(doc, indent=indent, sort_keys=sort_keys, default=default))


@contextlib.contextmanager
def staged_dir(path: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a new empty directory beside ``path``; when the block succeeds it is renamed to
    ``path`` in one step, so ``path`` never holds a partial result (an export of a run: every
    SAE or none). On failure the staging directory is removed and ``path`` is untouched.

    An existing empty ``path`` is replaced; a non-empty one only with ``replace=True`` (the old
    one is moved aside, the new one renamed in, then the old one deleted). Files inside should be
    written with the durable helpers above; the renames are made durable with the parent.
    """
    import shutil

    path = Path(path)
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir() and any(path.iterdir()) and not replace:
        raise FileExistsError(errno.EEXIST, "exists and is not empty", str(path))
    stage = parent / f".{path.name}.staging-{os.getpid()}"
    if stage.exists():  # left by a killed run of this pid number
        shutil.rmtree(stage)
    stage.mkdir()
    try:
        yield stage
        fsync_dir(stage)
        old = None
        if path.exists() and any(path.iterdir()):
            old = parent / f".{path.name}.replaced-{os.getpid()}"
            os.replace(path, old)
        elif path.exists():
            path.rmdir()
        os.replace(stage, path)
        fsync_dir(parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def append_line(path: str | Path, line: str, *, sync: bool = False) -> None:
    """Append one line (a log record); ``sync=True`` also fsyncs it.

    Appends are not atomic: a crash can leave a partial last line, which readers of such logs
    (``metrics.jsonl``) must drop. Callers fsync at commit points rather than per line.
    """
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        if sync:
            f.flush()
            os.fsync(f.fileno())


def open_scratch(path: str | Path) -> IO[bytes]:
    """Open a binary scratch file for appending: working storage of one computation (e.g. the
    firing pattern the ``cooccurrence`` accumulator spills to disk), inside a temporary directory
    that the computation removes. Deliberately *not* durable — never a result, never read after
    the process ends — so it skips the rename and fsync of the writers above."""
    return open(path, "ab")
