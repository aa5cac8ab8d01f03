"""User-facing errors.

Every failure a user can cause (bad flag, wrong path, mismatched dimensions, unknown plugin
component) is raised as an :class:`SAEError` whose message says what is wrong *and* how to fix
it. The CLI prints the message as one line on stderr and exits with status 1; anything else that
escapes is a bug in sae and keeps its traceback.
"""

from __future__ import annotations


class SAEError(Exception):
    """Base class: the message is shown to the user verbatim, so it must name the fix."""


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
