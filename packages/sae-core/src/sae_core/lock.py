"""Advisory locks on directories that one process writes at a time (a run, a cache being written).

``DirLock(path, what)`` holds an exclusive ``fcntl.flock`` on ``<path>/.lock`` for as long as
the context is open; a second process trying the same gets a one-line :class:`LockedError`
naming the holder's pid. ``flock`` locks belong to the open file, so the kernel drops them when
the holder exits in any way (``kill -9`` included): a lock can never be left stale, and the
``.lock`` file staying behind means nothing. The holder's pid is written into the file only to
name it in the error.

Advisory means other programs (``rm``, ``cp``) are not stopped; only sae processes check.
Where ``fcntl`` does not exist (Windows) the lock is a no-op.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from sae_core.errors import SAEError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


class LockedError(SAEError):
    """Another process holds the lock on a directory this process needs to write."""


class DirLock:
    """Exclusive advisory lock on directory ``path`` (created if missing).

    ``what`` names the directory for the error message ("run directory", "cache"), ``hint``
    says what to do instead (e.g. "or pass another --out").
    """

    def __init__(self, path: str | Path, what: str, hint: str = "") -> None:
        self.path = Path(path)
        self.what = what
        self.hint = hint
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DirLock:
        if self._fd is not None:
            return self
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                holder = self.holder()
                who = f"pid {holder}" if holder else "another process"
                raise LockedError(
                    f"{self.what} {self.path} is in use by another sae process ({who}); wait for it to "
                    f"finish or stop it{self.hint}"
                ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def holder(self) -> int | None:
        """The pid recorded by the current holder (None if unknown)."""
        try:
            text = (self.path / LOCK_NAME).read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    @contextlib.contextmanager
    def collective(self, dist: Any) -> Iterator[DirLock]:
        """Hold the lock for a ``torchrun`` job (a :class:`~sae_core.dist.Dist`): rank 0 takes it
        for every rank, and every rank fails together when it cannot (no rank left waiting)."""
        failure: BaseException | None = None
        if dist.is_main:
            try:
                self.acquire()
            except Exception as e:
                failure = e
        if dist.active:
            told = dist.all_gather_object(None if failure is None else str(failure))[0]
            if told is not None and failure is None:
                raise LockedError(told)
        if failure is not None:
            raise failure
        try:
            yield self
        finally:
            self.release()

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the file drops the flock

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
