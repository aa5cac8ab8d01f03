"""Typed config validation: unknown keys are errors for user files, tolerated for old files."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest
from sae_core.dataclass_parsing import from_dict
from sae_core.errors import ConfigError


@dataclass
class Sample:
    k: int
    lr: float = 3e-4
    arch: Literal["topk", "relu"] = "topk"
    layers: list[int] = field(default_factory=list)
    name: str | None = None


def test_coerces_types() -> None:
    cfg = from_dict(Sample, {"k": "32", "lr": "1e-3", "layers": [1, "2"]})
    assert cfg == Sample(k=32, lr=1e-3, layers=[1, 2])


def test_unknown_key_suggests() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'lrr' \(did you mean 'lr'\?\)"):
        from_dict(Sample, {"k": 1, "lrr": 0.1}, where="sweep.toml [sae]")


def test_unknown_key_tolerated_when_lenient() -> None:
    assert from_dict(Sample, {"k": 1, "future_field": 3}, strict=False).k == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"k": 1.5}, "expected an integer"),
        ({"k": 1, "arch": "gelu"}, "is not one of"),
        ({}, "missing required key"),
        ({"k": True}, "expected an integer"),
    ],
)
def test_bad_values(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(Sample, data)
