"""Ragged TopK codes: each SAE keeps exactly its own k (no padding), decodes like a dense numpy
reference, and a TopK bank's step never builds the (n, batch, d_sae) pre-activation stack."""

from __future__ import annotations

import numpy as np
import torch
from sae_core import TrainContext
from sae_core.archs.ops import make_hyper
from sae_core.archs.ragged import decode_codes, fired_of, topk_entries
from sae_core.archs.topk import TopKBank, TopKHyper
from torch.utils._python_dispatch import TorchDispatchMode


def test_each_sae_keeps_its_own_k_and_decodes_like_dense_numpy() -> None:
    g = torch.Generator().manual_seed(0)
    n, batch, d_sae, d_out, ks = 3, 5, 12, 4, [1, 4, 0]
    pre = torch.randn(n, batch, d_sae, generator=g)  # (n, batch, d_sae)
    W_dec = torch.randn(n, d_sae, d_out, generator=g)
    mask = torch.rand(d_sae, generator=g) < 0.5  # AuxK-style restriction for SAE 1
    P, W = pre.numpy(), W_dec.numpy()
    for i, k in enumerate(ks):
        for restrict in (None, mask):
            codes, vals = topk_entries(pre[i], k, restrict)
            assert codes.lat.shape == (batch * k,) and vals.shape == (batch * k,)  # no padding to max(k)
            out = decode_codes(codes, vals.relu(), W_dec[i]).numpy()
            fired = np.zeros(d_sae)
            for b in range(batch):
                p = P[i, b] if restrict is None else np.where(restrict.numpy(), P[i, b], -np.inf)
                top = np.argsort(-p)[:k]
                f = np.zeros(d_sae)
                f[top] = np.maximum(P[i, b, top], 0)
                fired += f > 0
                np.testing.assert_allclose(out[b], f @ W[i], rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(fired_of(codes, vals.relu(), d_sae).numpy(), fired)


class _LargestOutput(TorchDispatchMode):
    """Records the largest tensor any op returns while active."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_a_bank_step_never_holds_every_saes_pre_activations() -> None:
    """The (n, batch, d_sae) stack is what made a bank of 8 use 5 GB where one SAE used 1.6:
    no op of the step may return a tensor that large (one SAE's (batch, d_sae) is the most)."""
    n, batch, d_in, d_sae = 4, 64, 8, 96
    hypers = [make_hyper(TopKHyper, "topk", {"k": k}, d_sae) for k in (2, 3, 5, 8)]
    bank = TopKBank(d_in, d_sae, hypers, generator=[torch.Generator().manual_seed(i) for i in range(n)])
    dead = torch.rand(n, d_sae, generator=torch.Generator().manual_seed(1)) < 0.3
    x = torch.randn(batch, d_in)
    with _LargestOutput() as mode:
        out = bank.train_forward(x, TrainContext(step=0, sparsity_scale=1.0, dead=dead))
        out.loss.sum().backward()
    assert batch * d_sae <= mode.largest < n * batch * d_sae
    with _LargestOutput() as dense:  # the check sees the stack where there is one
        bank.pre_acts(x)
    assert dense.largest == n * batch * d_sae
