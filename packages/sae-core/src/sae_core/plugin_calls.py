"""Calls into plugin code, guarded: a plugin's bug or bad return value is one line naming it.

sae calls third-party code at a few well-defined places (an adapter's ``make_inputs``,
``run_with_hooks``, ``cached_inputs``, ``generate``, ``spec`` and ``iter_batches``; a store's
``open_writer``/``open_reader``/``detect``; an analysis's ``run``; an exporter's ``check`` and
``write``). When such a call raises something that is not an :class:`SAEError`, or returns the
wrong type, the user of the plugin would otherwise see a traceback through sae's internals and
blame sae. :func:`guarded` turns it into a :class:`PluginError` that names the component, the
plugin and distribution that registered it, the call, what was expected, and the plugin's line
that failed — so the user knows whom to ask and the plugin's author where to look.

Built-in components (sae-core, sae-vision, sae-text, sae-viewer) are not wrapped: an unexpected
exception there is a bug in sae and keeps its traceback (see :mod:`sae_core.errors`).
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sae_core.errors import PluginError, SAEError, os_error_message

T = TypeVar("T")


def describe(kind: str, name: str) -> tuple[str, bool]:
    """``("adapter 'patches' of plugin 'example' (sae-example-plugin 0.4.0)", builtin)``.

    Components not found in the registry (built directly in Python) are named by kind and name
    alone and treated as third-party code."""
    label = f"{kind} {name!r}"
    try:
        from sae_core.plugins import get_manager  # lazy: loads pluggy

        manager = get_manager()
        component = next((c for c in manager.registry.all(kind) if c.name == name), None)
        info = manager.infos.get(component.plugin) if component is not None else None
    except SAEError:
        return label, False
    if component is None or info is None:
        return label, False
    if info.builtin:
        return f"{label} (built in, {info.name})", True
    dist = " ".join(x for x in (info.distribution, info.version) if x)
    return f"{label} of plugin {info.name!r}" + (f" ({dist})" if dist else ""), False


def _where(e: BaseException) -> str:
    """``" at patches.py:341 in make_inputs"``: the innermost frame of the exception."""
    frames = traceback.extract_tb(e.__traceback__)
    if not frames:
        return ""
    f = frames[-1]
    return f" at {Path(f.filename).name}:{f.lineno} in {f.name}"


@contextmanager
def guarded(kind: str, name: str, call: str, expected: str = "") -> Iterator[None]:
    """Run a call into component ``name`` of ``kind``; a non-SAE exception from a third-party
    component becomes one line: who, which call, what went wrong where, and what was expected."""
    try:
        yield
    except SAEError:
        raise  # already a user-facing message (the plugin's own, or sae's)
    except OSError as e:
        if os_error_message(e) is not None:
            raise  # a full disk or unwritable place: the CLI's own message says what to do
        _reraise(kind, name, call, expected, e)
    except Exception as e:
        _reraise(kind, name, call, expected, e)


def _reraise(kind: str, name: str, call: str, expected: str, e: Exception) -> None:
    label, builtin = describe(kind, name)
    if builtin:
        raise e  # a bug in sae itself: keep the traceback
    want = f"; expected {expected}" if expected else ""
    raise PluginError(f"{label}: {call} failed with {type(e).__name__}: {e}{_where(e)}{want}; this is a bug in "
                      "the plugin: report it to its authors (or exclude it with SAE_LOAD_PLUGINS)") from e


def guarded_iter(items: Iterable[T], kind: str, name: str, call: str, expected: str = "") -> Iterator[T]:
    """Iterate a plugin's generator (``iter_batches``) with each step :func:`guarded`."""
    with guarded(kind, name, call, expected):
        it = iter(items)
    while True:
        with guarded(kind, name, call, expected):
            try:
                item = next(it)
            except StopIteration:
                return
        yield item


def returned(value: Any, types: type | tuple[type, ...], kind: str, name: str, call: str, expected: str) -> Any:
    """``value`` if it is an instance of ``types``, else a one-line :class:`PluginError` (for any
    component, built in or not: a wrong return type is never the user's mistake)."""
    if not isinstance(value, types):
        label, _ = describe(kind, name)
        raise PluginError(f"{label}: {call} returned {type(value).__name__}, expected {expected}; fix the plugin "
                          "or report it to its authors")
    return value


def check_inputs(inputs: Any, kind: str, name: str, call: str) -> Any:
    """An adapter's ``ModelInputs``: the right type, and ``valid`` (batch, tokens) consistent
    with ``kinds`` (tokens,) and ``example`` (batch,) — the facts every SAE hook relies on."""
    import numpy as np  # lazy: loads numpy

    from sae_core.protocols.running import ModelInputs  # lazy: loads numpy

    expected = "ModelInputs(data, valid=(batch, tokens) bool array, kinds=[one per token], example=(batch,) ids)"
    returned(inputs, ModelInputs, "adapter", name, call, expected)
    valid, problem = inputs.valid, ""
    if not isinstance(valid, np.ndarray) or valid.ndim != 2:
        problem = f"valid must be a (batch, tokens) numpy bool array, got {type(valid).__name__}" + (
            f" of shape {tuple(valid.shape)}" if hasattr(valid, "shape") else "")
    elif len(inputs.kinds) != valid.shape[1]:
        problem = f"kinds has {len(inputs.kinds)} entries but valid has {valid.shape[1]} tokens per row"
    elif len(np.asarray(inputs.example).reshape(-1)) != valid.shape[0]:
        problem = f"example has {len(np.asarray(inputs.example).reshape(-1))} ids but valid has {valid.shape[0]} rows"
    if problem:
        label, _ = describe(kind, name)
        raise PluginError(f"{label}: {call} returned inconsistent ModelInputs: {problem}; fix the plugin or report it "
                          "to its authors")
    return inputs
