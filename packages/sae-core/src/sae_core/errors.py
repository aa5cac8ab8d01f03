"""User-facing errors.

Every failure a user can cause (bad flag, wrong path, mismatched dimensions, unknown plugin
component) is raised as an :class:`SAEError` whose message says what is wrong *and* how to fix
it. The CLI prints the message as one line on stderr and exits with status 1; anything else that
escapes is a bug in sae and keeps its traceback.
"""

from __future__ import annotations

import errno


class SAEError(Exception):
    """Base class: the message is shown to the user verbatim, so it must name the fix.

    ``exit_code`` is the CLI's exit status for it (1; an interrupted run uses 128 + signal).
    """

    exit_code: int = 1


class ConfigError(SAEError):
    """A config file, sweep file or CLI option is invalid."""


class PluginError(SAEError):
    """A plugin failed to load, or two plugins registered the same component name."""


class UnknownComponentError(PluginError):
    """A component (adapter, store, architecture, analysis, dataset) name is not installed."""


class StoreError(SAEError):
    """An activation store is missing, corrupt, or does not match what was asked of it."""


class CheckpointError(SAEError):
    """An SAE checkpoint is missing, corrupt, or incompatible with the data it is used with."""


class DataError(SAEError):
    """A dataset spec points at nothing usable (empty folder, missing file, wrong field)."""


class ParallelCacheInProgress(StoreError):
    """The cache is being written in blocks by several ranks; it must be finished that way."""


class RunInterrupted(SAEError):
    """SIGINT/SIGTERM stopped a run at a step boundary after saving its state; exit 128 + signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


#: errno values that mean "the environment refused the write", not "sae has a bug"
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}


def os_error_message(e: OSError) -> str | None:
    """A one-line message with the fix for a full disk or an unwritable place; None otherwise.

    These surface anywhere a file is written (a checkpoint mid-run, an analysis result), so the
    CLI turns them into ``error:`` lines instead of tracebacks; other OS errors stay bugs.
    """
    where = f" ({e.filename})" if e.filename else ""
    if e.errno in _NO_SPACE:
        return (f"no space left on the device{where}: free disk space or write elsewhere, then run the same "
                "command again (`sae train --resume` continues a run from its last saved state)")
    if e.errno in _NOT_WRITABLE:
        reason = "read-only file system" if e.errno == errno.EROFS else "permission denied"
        return f"cannot write{where}: {reason}; use a writable location (e.g. copy the run or cache there)"
    return None


class ExportError(SAEError):
    """An SAE cannot be written in the requested format (no equivalent architecture, ...)."""
