"""Shared by the tests (moved from tests/core/archs/test_archs.py)."""

from __future__ import annotations

import torch
from sae_core import TrainContext


def params(bank, i):
    return bank.W_enc[i], bank.b_enc[i], bank.W_dec[i], bank.b_dec[i]


def assert_topk_grads_match_dense(bank, x: torch.Tensor, dead: torch.Tensor, ks: tuple[int, ...],
                                  rtol: float, atol: float) -> None:
    """Gradients of a TopK bank's train_forward (sparse encoder backward + sparse decode) equal
    autograd's dense gradients of each SAE's loss written from the equations (MSE + AuxK)."""
    out = bank.train_forward(x, TrainContext(step=0, dead=dead))
    out.loss.sum().backward()
    for i, k in enumerate(ks):
        W_enc, b_enc, W_dec, b_dec = (p.detach().clone().requires_grad_(True) for p in params(bank, i))
        pre = (x - b_dec) @ W_enc + b_enc
        v, idx = pre.topk(k, dim=-1)
        f = torch.zeros_like(pre).scatter(-1, idx, v.relu())
        recon = f @ W_dec + b_dec
        k_aux = min(x.shape[-1] // 2, int(dead[i].sum()))
        av, aidx = pre.masked_fill(~dead[i], float("-inf")).topk(k_aux, dim=-1)
        e_hat = torch.zeros_like(pre).scatter(-1, aidx, av.relu()) @ W_dec
        loss = ((x - recon) ** 2).sum(-1).mean() + ((x - recon).detach() - e_hat).pow(2).sum(-1).mean() / 32
        loss.backward()
        for name, ref in (("W_enc", W_enc), ("b_enc", b_enc), ("W_dec", W_dec), ("b_dec", b_dec)):
            torch.testing.assert_close(getattr(bank, name).grad[i], ref.grad, rtol=rtol, atol=atol,
                                       msg=f"{name} SAE {i}")
