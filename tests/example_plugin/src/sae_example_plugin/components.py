"""The example plugin's ``vector`` modality: a ``gaussian`` dataset, an ``mlp`` adapter and a
``decoder-norms`` analysis (the smallest of each kind; the tutorial's files are beside it)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import torch
from sae_core import (
    ActivationBatch,
    ActivationSpec,
    AdapterRequest,
    Analysis,
    AnalysisContext,
    DataError,
    Dataset,
    Example,
    ModelAdapter,
    SAEError,
)

D_INPUT = 16


class GaussianDataset(Dataset):
    """``gaussian:N``: N standard-normal vectors of size 16, example i seeded by (seed, i)."""

    modality = "vector"

    def __init__(self, arg: str | None, *, seed: int | str = 0, limit: int | str | None = None, **options: Any):
        if options:
            raise DataError(f"gaussian dataset: unknown option(s) {sorted(options)}; valid: seed, limit")
        super().__init__(f"gaussian:{arg}")
        try:
            self.n = int(arg or 256)
        except ValueError:
            raise DataError(f"gaussian:N needs an integer N, got {arg!r}") from None
        if limit is not None:
            self.n = min(self.n, int(limit))
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Example:
        if not 0 <= index < self.n:
            raise IndexError(index)
        if str(index) == os.environ.get("SAE_EXAMPLE_CRASH_AT"):  # tests: a crash mid-cache
            raise SystemExit(f"crashing at example {index} (SAE_EXAMPLE_CRASH_AT)")
        rng = np.random.default_rng([self.seed, index])
        return Example(id=index, data=rng.standard_normal(D_INPUT).astype(np.float32))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "seed": self.seed}


class MLPAdapter(ModelAdapter):
    """A seeded random 3-layer MLP; ``--layers`` picks hidden layers 0..2 (negative allowed)."""

    name: ClassVar[str] = "mlp"
    modality: ClassVar[str] = "vector"

    def __init__(self, request: AdapterRequest) -> None:
        super().__init__(request)
        width = int(request.options.get("width", 32))
        gen = torch.Generator().manual_seed(int(request.options.get("seed", 0)))
        dims = [D_INPUT, width, width, width]
        self.weights = [torch.randn(a, b, generator=gen) / a**0.5 for a, b in itertools.pairwise(dims)]
        self.layers: list[int] = []
        for raw in request.layers:
            try:
                i = int(raw)
            except ValueError:
                raise SAEError(f"mlp adapter: layer {raw!r} is not an integer; valid: 0, 1, 2 (or -1..-3)") from None
            if not -3 <= i < 3:
                raise SAEError(f"mlp adapter: layer {i} out of range; valid: 0, 1, 2 (or -1..-3)")
            self.layers.append(i % 3)
        self.width = width

    def spec(self) -> ActivationSpec:
        return ActivationSpec(
            adapter=self.name,
            model=self.request.model,
            layers=[f"hidden.{i}" for i in self.layers],
            d_model=self.width,
            tokens_per_example=1,
            token_kinds=["token"],
        )

    def iter_batches(
        self, dataset: Dataset, *, start: int = 0, batch_size: int = 64, num_workers: int = 0
    ) -> Iterator[ActivationBatch]:
        for lo in range(start, len(dataset), batch_size):
            ids = np.arange(lo, min(lo + batch_size, len(dataset)), dtype=np.int64)
            h = torch.from_numpy(np.stack([dataset[int(i)].data for i in ids]))  # (batch, 16)
            hidden = []
            for w in self.weights:
                h = torch.relu(h @ w)  # (batch, width)
                hidden.append(h)
            acts = torch.stack([hidden[i] for i in self.layers], dim=1)[:, :, None, :]  # (batch, L, 1, width)
            yield ActivationBatch(acts=acts, example_ids=ids)


class DecoderNorms(Analysis):
    """Writes the norm of every decoder row (``decoder_norms.json``)."""

    name: ClassVar[str] = "decoder-norms"

    def run(self, ctx: AnalysisContext) -> dict[str, Any]:
        norms = ctx.sae.W_dec.detach().norm(dim=-1)  # (d_sae,)
        out = {"mean": float(norms.mean()), "min": float(norms.min()), "max": float(norms.max())}
        ctx.write_json("decoder_norms.json", out)
        return out
