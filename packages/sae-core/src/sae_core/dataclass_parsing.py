"""Typed, validated configuration dataclasses.

User files (sweep TOML, CLI-derived configs) are strict: an unknown key is an error that lists the
valid ones, because a typo that silently falls back to a default wastes a training run. Files we
wrote earlier (old checkpoints' ``cfg.json``) are read leniently: unknown keys are dropped so that
older and newer versions of sae can read each other's checkpoints.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, TypeVar

from sae_core.errors import ConfigError

T = TypeVar("T")


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _coerce(value: Any, tp: Any, where: str, strict: bool = True) -> Any:
    """Coerce ``value`` to annotation ``tp`` for the simple types config files use; nested
    dataclasses are read with the same ``strict`` as their parent."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, typing.get_args(tp), where, strict)
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {list(allowed)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (arg,) = typing.get_args(tp)[:1] or (Any,)
        return [_coerce(v, arg, f"{where}[{i}]", strict) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table/dict, got {value!r}")
        return dict(value)
    if tp in _SCALARS:
        return _SCALARS[tp](value, where)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table/dict, got {value!r}")
        return from_dict(tp, value, strict=strict, where=where)
    return value


def _coerce_union(value: Any, args: tuple[Any, ...], where: str, strict: bool) -> Any:
    """``X | Y | None``: None where allowed, else the first member type that takes ``value``
    (the first member's error when none does)."""
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(value, arg, where, strict)
        except ConfigError as e:
            errors.append(str(e))
    raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")


def _to_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ConfigError(f"{where}: expected true/false, got {value!r}")


def _to_int(value: Any, where: str) -> int:
    """An integer, also from an integral float or a numeric string (``"4096"``, ``1e4``)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    try:
        f = float(value)
    except ValueError:
        raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if f != int(f):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    return int(f)


def _to_float(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a number, got {value!r}") from None


def _to_str(value: Any, where: str) -> str:
    if not isinstance(value, str | int | float):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return str(value)


#: scalar annotations and their coercions (``_coerce``)
_SCALARS: dict[Any, Any] = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}


def from_dict(cls: type[T], data: dict[str, Any], *, strict: bool = True, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, coercing simple types.

    ``strict=True`` (user input): unknown keys raise :class:`ConfigError` naming the valid keys.
    ``strict=False`` (files we wrote, possibly by another version): unknown keys are ignored.
    The dataclass's own ``__post_init__`` performs semantic validation.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown and strict:
        k = unknown[0]
        raise ConfigError(
            f"{where}: unknown key {k!r}{_suggest(k, list(fields))}; valid keys: {', '.join(sorted(fields))}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}", strict) for k, v in data.items() if k in fields}
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key(s): {', '.join(missing)}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def to_dict(obj: Any) -> dict[str, Any]:
    """JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(obj)
