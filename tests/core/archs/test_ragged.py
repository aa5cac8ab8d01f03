"""Ragged TopK codes: each SAE keeps exactly its own k (no padding), and the decode equals a dense
numpy reference."""

from __future__ import annotations

import numpy as np
import torch
from sae_core.archs.ragged import ragged_decode, ragged_fired, ragged_topk


def test_each_sae_keeps_its_own_k_and_decodes_like_dense_numpy() -> None:
    g = torch.Generator().manual_seed(0)
    n, batch, d_sae, d_out, ks = 3, 5, 12, 4, [1, 4, 0]
    pre = torch.randn(n, batch, d_sae, generator=g)  # (n, batch, d_sae)
    W_dec = torch.randn(n, d_sae, d_out, generator=g)
    codes = ragged_topk(pre, ks)
    assert codes.lat.shape[0] == batch * sum(ks)  # no padding to max(k)
    vals = pre.reshape(-1)[codes.bag * d_sae + codes.lat % d_sae].relu()
    out = ragged_decode(codes, vals, W_dec).numpy()
    P, W = pre.numpy(), W_dec.numpy()
    fired = np.zeros((n, d_sae))
    for i, k in enumerate(ks):
        for b in range(batch):
            f = np.zeros(d_sae)
            top = np.argsort(-P[i, b])[:k]
            f[top] = np.maximum(P[i, b, top], 0)
            fired[i] += f > 0
            np.testing.assert_allclose(out[i, b], f @ W[i], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ragged_fired(codes, vals, d_sae).numpy(), fired)
