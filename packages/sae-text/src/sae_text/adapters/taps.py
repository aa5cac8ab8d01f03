"""Capturing (or replacing) what named modules of a PyTorch model compute, by forward hooks.

A *tap* is a module path of ``model.named_modules()`` (``encoder.layer.3``,
``model.layers.12.mlp``) and a port: the module's ``output`` (the default) or its ``input``
(``model.layers.12.mlp:input``, the first positional argument or ``hidden_states``). One
forward can feed several taps — an SAE's layers, or a transcoder's input and output — and
stops after the last of them has fired (a private exception raised from its hook), so caching
block 3 of a 12-block model costs a third of a forward.

This module knows nothing of datasets or caches: :class:`Taps` turns ``forward()`` into
``{tap name: tensor}``, which is what a cache writer, a live trainer reading activations batch
by batch, or a splice evaluation need alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from sae_core.errors import SAEError
from torch import nn

PORTS = ("output", "input")


class _StopForward(Exception):
    """Raised by the hook of the last tap: nothing after it needs computing."""


@dataclass(frozen=True)
class Tap:
    """A module path and which side of the module is read."""

    path: str  # e.g. "encoder.layer.3"
    port: str = "output"  # "output" | "input"

    @property
    def name(self) -> str:
        """The canonical name caches record: the path, with ``:input`` for inputs."""
        return self.path if self.port == "output" else f"{self.path}:{self.port}"

    @classmethod
    def parse(cls, raw: str) -> Tap:
        path, sep, port = raw.strip().rpartition(":")
        if not sep:
            return cls(raw.strip())
        if port not in PORTS:
            raise SAEError(f"hook {raw!r}: unknown port {port!r}; write PATH (its output) or PATH:input")
        return cls(path, port)


def first_tensor(value: Any) -> torch.Tensor | None:
    """The activation a module produced: the tensor itself, or the first element of a tuple or
    ``ModelOutput`` (hidden states come first in every Hugging Face block output)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, tuple | list) and value:
        return first_tensor(value[0])
    if isinstance(value, dict) and value:  # transformers' ModelOutput is an OrderedDict
        return first_tensor(next(iter(value.values())))
    return None


def _input_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    if args:
        return first_tensor(args[0])
    return first_tensor(kwargs.get("hidden_states", kwargs.get("input")))


def _with_first(value: Any, new: torch.Tensor) -> Any:
    """``value`` with its first tensor replaced by ``new`` (the inverse of :func:`first_tensor`)."""
    if isinstance(value, torch.Tensor):
        return new
    if isinstance(value, tuple | list):
        return type(value)([_with_first(value[0], new), *value[1:]])
    if isinstance(value, dict):
        key = next(iter(value))
        value[key] = _with_first(value[key], new)
        return value
    raise TypeError(f"cannot replace the activation inside a {type(value).__name__}")


class Taps:
    """Forward hooks on ``taps`` of ``model``.

    ``run(forward)`` calls ``forward()`` with the hooks attached and returns the first tensor each
    tap saw; with ``stop=True`` the forward is cut as soon as every tap has fired — after the last
    of them in execution order, whichever it is, so nothing has to know the model's call order
    (and an encoder-decoder whose decoder needs more inputs still gives its encoder's modules). A
    module called several times in one forward (a shared module) keeps its first call.
    """

    def __init__(self, model: nn.Module, taps: list[Tap]) -> None:
        self.model = model
        self.taps = list(dict.fromkeys(taps))
        modules = dict(model.named_modules())
        for tap in self.taps:
            if tap.path not in modules or not tap.path:
                raise SAEError(unknown_module_message(tap.path, list(modules)))
        self.modules = {tap: modules[tap.path] for tap in self.taps}

    @contextlib.contextmanager
    def _hooked(self, fn: Callable[[Tap, torch.Tensor | None], None]) -> Iterator[None]:
        handles = []
        try:
            for tap, module in self.modules.items():
                if tap.port == "output":
                    handles.append(module.register_forward_hook(lambda m, a, out, tap=tap: fn(tap, first_tensor(out))))
                else:
                    handles.append(module.register_forward_pre_hook(
                        lambda m, a, kw, tap=tap: fn(tap, _input_of(a, kw)), with_kwargs=True))
            yield
        finally:
            for h in handles:
                h.remove()

    def run(self, forward: Callable[[], Any], *, stop: bool = True, require_all: bool = True) -> dict[Tap, torch.Tensor]:
        """``{tap: tensor}`` of one ``forward()``, in firing order. ``require_all=False`` (listing
        hooks) skips taps that see no tensor or never run instead of raising."""
        captured: dict[Tap, torch.Tensor] = {}

        def save(tap: Tap, x: torch.Tensor | None) -> None:
            if tap in captured:
                return
            if x is None:
                if require_all:
                    raise SAEError(f"hook {tap.name!r} does not see a tensor; pick a module whose {tap.port} is one")
                return
            captured[tap] = x
            if stop and len(captured) == len(self.taps):
                raise _StopForward

        with self._hooked(save), contextlib.suppress(_StopForward):
            forward()
        missing = [t.name for t in self.taps if t not in captured]
        if missing and require_all:
            raise SAEError(f"hook(s) {missing} never ran in a forward of this model; pick modules that the forward calls")
        return captured

    @contextlib.contextmanager
    def replacing(self, tap: Tap, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
        """While open, ``tap``'s tensor is replaced by ``fn(tensor)`` in every forward (splicing)."""
        module = self.modules[tap]
        if tap.port == "output":
            handle = module.register_forward_hook(lambda m, a, out: _with_first(out, fn(first_tensor(out))))
        else:
            def pre(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                if args:
                    return (_with_first(args[0], fn(first_tensor(args[0]))), *args[1:]), kwargs
                key = "hidden_states" if "hidden_states" in kwargs else "input"
                return args, {**kwargs, key: fn(first_tensor(kwargs[key]))}

            handle = module.register_forward_pre_hook(pre, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()


def unknown_module_message(path: str, names: list[str]) -> str:
    """One line naming the closest module paths (the typo, usually, is in one component)."""
    import difflib

    names = [n for n in names if n]
    close = difflib.get_close_matches(path, names, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else f"e.g. {', '.join(names[:3])}"
    return f"unknown module {path!r}: {hint} (`sae hooks --adapter hf --model M` lists them all)"
