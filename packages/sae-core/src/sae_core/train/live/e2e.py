"""End-to-end training: the SAE spliced into the model, and what that does to its output, in the loss.

``sae train --adapter ... --e2e kl`` (the SAELens fork's ``--use-end-to-end``, sparsify's
``loss_fn = kl``): with every training batch of tokens the live source hands out ``e2e_rows``
token windows of the same mixing window (:meth:`LiveSource._e2e_order`). For each bank:

    clean   = model(rows)                                       (no gradient)
    spliced = model(rows with layer L's activations x at the stream's positions replaced by
              SAE_i(x · scale) / scale)                         (one forward for the whole bank)
    kl      : mean over document positions of KL(softmax(clean) || softmax(spliced))
    mse     : Σ ||spliced − clean||² / Σ ||clean||² over document positions (final hidden states)
    loss_i  = reconstruction loss_i + e2e_coeff · kl_i (or mse_i)

The model's weights are frozen; the gradient flows from the output back through the rest of the
model into each SAE's parameters. The SAE is spliced in inference mode (``splice_encode``/``decode``:
the codes a checkpoint gives), differentiated as each architecture trains: TopK, BatchTopK and ReLU
through their own forward, JumpReLU through its straight-through estimator, so this term trains
its threshold θ too (∂f/∂θ = −(θ/ε)·K((pre − θ)/ε); ``tests/core/train/test_e2e.py`` checks it by hand).

The bank trick: the rows are repeated ``n`` times in one forward; at the layer, copy ``i`` gets
SAE ``i``'s reconstruction (the activations before the layer are those of the clean model, the
same for every copy), so each SAE's term depends on its own parameters only, and back-propagating
their sum gives each SAE exactly the gradient it would get alone (``tests/core/train/test_e2e.py`` checks
this against independent per-SAE references on a tiny GPT-2).

Under ``torchrun --parallel data`` each rank takes its share of the rows and normalises by the
positions of all of them, so that the averaged gradients are those of one process.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sae_core.errors import ConfigError

MODES = ("kl", "mse")


class EndToEnd:
    """The end-to-end term of one data group (its layer and token kind) on a live source."""

    def __init__(self, source: Any, *, mode: str, coeff: float, layer: int, tokens: str, rank: int = 0,
                 world: int = 1) -> None:
        if mode not in MODES:
            raise ConfigError(f"--e2e must be one of {', '.join(MODES)}, got {mode!r}")
        if not getattr(source, "live", False):
            raise ConfigError("--e2e trains through the running model: it needs live training (--adapter, --model)")
        adapter = source.adapter
        if not type(adapter).supports("spliced_forward"):
            raise ConfigError(f"adapter {adapter.name!r} cannot run the model with an SAE spliced in (no "
                              "spliced_forward); --e2e works with the text adapters (hf, tlens)")
        self.source, self.adapter, self.mode, self.coeff = source, adapter, mode, coeff
        self.layer_name = source.meta.layers[layer]
        self.positions = source.positions(tokens)
        self.rank, self.world = rank, world
        model = getattr(adapter, "model", None)
        if model is not None:  # frozen: gradients reach the SAEs only
            for p in model.parameters():
                p.requires_grad_(False)

    def rows(self) -> np.ndarray:
        """The index records (r, T) of the current batch's rows (every rank's)."""
        rows = self.source.e2e_batch
        if rows is None:
            raise ConfigError("the live source handed out no rows for end-to-end training")
        return rows

    def loss(self, bank: Any, scale: float, rows: np.ndarray | None = None) -> torch.Tensor:
        """(n,) ``e2e_coeff`` times each SAE's KL (or normalised MSE) on the current rows."""
        rows = self.rows() if rows is None else rows
        target = rows["position"] >= 0  # (r, T): document tokens (no BOS/CLS/SEP, no padding)
        total = max(int(target.sum()), 1)  # of every rank's rows: the loss is a mean over all of them
        if self.world > 1:
            share = np.array_split(np.arange(len(rows)), self.world)[self.rank]
            rows, target = rows[share], target[share]
        n = bank.n
        mask = rows["valid"].astype(bool)  # (r, T): the positions the SAEs were trained on
        kind = np.zeros(rows.shape[1], dtype=bool)
        kind[self.positions] = True
        mask &= kind[None, :]
        output = "logits" if self.mode == "kl" else "hidden"
        device = bank.W_dec.device
        t = torch.from_numpy(target).to(device)
        if not len(rows):
            return torch.zeros(n, device=device)

        def replace(v: torch.Tensor) -> torch.Tensor:  # v: (n * m, d), copy i's positions contiguous
            m = v.shape[0] // n
            x = v[:m].detach().to(device, torch.float32) * scale  # the clean activations, as trained on
            recon = bank.decode(bank.splice_encode(x)) / scale  # (n, m, d)
            return recon.reshape(n * m, -1).to(v.device)

        with self.source._lock:  # the model is shared with the thread computing the next window
            with torch.no_grad():
                clean = self.adapter.spliced_forward(rows, mask, self.layer_name, None, output=output).float()
            with torch.enable_grad():
                spliced = self.adapter.spliced_forward(np.tile(rows, (n, 1)), np.tile(mask, (n, 1)), self.layer_name,
                                                       replace, output=output).float()
        spliced = spliced.view(n, *clean.shape).to(device)
        clean = clean.to(device)
        if self.mode == "kl":
            logp = torch.log_softmax(clean, dim=-1)
            div = (logp.exp() * (logp - torch.log_softmax(spliced, dim=-1))).sum(-1)  # (n, r, T)
            per = (div * t).sum((1, 2)) / total
        else:
            norm = (clean.pow(2).sum(-1) * t).sum()  # of this rank's rows
            if self.world > 1:  # the normaliser of all rows (a constant: no gradient)
                norm = self.source.dist.all_reduce_(norm.detach().clone())
            per = ((spliced - clean).pow(2).sum(-1) * t).sum((1, 2)) / norm.clamp_min(1e-12)
        return self.coeff * per * self.world  # the trainer averages gradients over the ranks
