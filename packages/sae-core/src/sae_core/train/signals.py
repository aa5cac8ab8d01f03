"""SIGINT and SIGTERM as a request to stop at the next step boundary.

Python turns SIGINT into a ``KeyboardInterrupt`` raised wherever the main thread happens to be
(between ``backward`` and the optimizer step, say), so a state saved there is not a state any
uninterrupted run passes through and ``--resume`` would not be exact. Instead, while a run is
training, both signals only set a flag; the trainer checks it after each whole step, saves, and
stops with :class:`~sae_core.errors.RunInterrupted` (exit status 128 + signal: 130 for SIGINT,
143 for SIGTERM). A second Ctrl-C means "stop now": it raises ``KeyboardInterrupt`` at once and
the last saved state stands.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Context manager installing the handlers (main thread only; elsewhere a no-op).

    ``signum`` is the first signal received, None while none was.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop without saving
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
