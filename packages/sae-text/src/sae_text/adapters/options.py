"""``--opt KEY=VALUE`` of the text adapters, parsed and checked before any model is loaded.

A typo in an option would otherwise be ignored silently, or surface after a minute of model
loading; both adapters therefore declare the keys they understand and every value is converted
here, with the fix in a one-line :class:`SAEError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sae_core.errors import SAEError

#: options every text adapter understands (windows, masks, batching)
WINDOW_OPTIONS: dict[str, str] = {
    "include_special": "true: keep BOS/CLS/SEP positions as training tokens (default false)",
    "include_bos": "alias of include_special",
    "max_windows_per_doc": "at most this many windows of each document (default: all)",
    "random_crop": "true: windows start at a seeded random offset of each document (default false)",
    "seed": "seed of random crops (and of randomly initialised models)",
    "sort_batches": "length-sort windows within this many batches to cut padding (default 8; 1: off)",
}

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_bool(key: str, value: Any) -> bool:
    v = str(value).strip().lower()
    if v in TRUE:
        return True
    if v in FALSE:
        return False
    raise SAEError(f"--opt {key}= expects true or false, got {value!r}")


def parse_int(key: str, value: Any, *, minimum: int) -> int:
    try:
        n = int(str(value).strip())
    except ValueError:
        raise SAEError(f"--opt {key}= expects an integer, got {value!r}") from None
    if n < minimum:
        raise SAEError(f"--opt {key}= must be >= {minimum}, got {n}")
    return n


def check_known(adapter: str, options: dict[str, Any], known: dict[str, str]) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        import difflib

        hints = [f"{k!r} (did you mean {c[0]!r}?)" if (c := difflib.get_close_matches(k, known, n=1)) else repr(k)
                 for k in unknown]
        raise SAEError(f"adapter {adapter!r}: unknown --opt {', '.join(hints)}; valid: {', '.join(sorted(known))}")


@dataclass(frozen=True)
class WindowOptions:
    """How documents become windows and windows become batches (shared by ``tlens`` and ``hf``)."""

    include_special: bool = False
    max_windows: int | None = None
    random_crop: bool = False
    seed: int = 0
    sort_batches: int = 8

    @classmethod
    def parse(cls, options: dict[str, Any]) -> WindowOptions:
        special = options.get("include_special", options.get("include_bos"))
        mw = options.get("max_windows_per_doc")
        return cls(
            include_special=parse_bool("include_special", special) if special is not None else False,
            max_windows=parse_int("max_windows_per_doc", mw, minimum=1) if mw not in (None, "") else None,
            random_crop=parse_bool("random_crop", options["random_crop"]) if "random_crop" in options else False,
            seed=parse_int("seed", options["seed"], minimum=0) if "seed" in options else 0,
            sort_batches=parse_int("sort_batches", options["sort_batches"], minimum=1) if "sort_batches" in options else 8,
        )
