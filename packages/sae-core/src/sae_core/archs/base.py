"""Shared machinery of SAE *banks*: ``n`` SAEs of one architecture and shape, stacked.

Every parameter carries a leading ``n_saes`` dimension, so one batched matmul runs all SAEs of a
sweep group on the batch they share. Per-SAE hyperparameters (k, L1 coefficient, ...) live in
tensors of shape ``(n,)``. Architectures subclass :class:`Bank` and implement
:meth:`Bank.encode` (inference) and :meth:`Bank.train_forward` (loss terms); everything else —
decoding, decoder normalisation, exporting one SAE to the checkpoint layout — is shared.

Notation used in the architecture docstrings: x ∈ R^d_in, pre = (x − b_dec) W_enc + b_enc,
x̂ = f W_dec + b_dec, SSE = ||x − x̂||².
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from sae_core.errors import ConfigError
from sae_core.protocols.architecture import Architecture


class BatchComm:
    """How a bank reaches the rest of its batch when data-parallel ranks each hold a slice.

    Losses that are means over the batch need nothing (the trainer averages gradients over
    ranks). Only batch-coupled terms use this: a nonlinear function of a batch mean (JumpReLU's
    target-L0 penalty) takes :meth:`mean`, and BatchTopK's threshold over the whole batch takes
    :meth:`gather`. This default is a single process: the local batch is the whole batch.
    """

    world: int = 1

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """Differentiable average over ranks of a per-rank batch mean."""
        return t

    def gather(self, t: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """Every rank's ``t`` concatenated along ``dim`` (no gradient)."""
        return t


@dataclass
class TrainContext:
    """Per-step information a bank's loss needs."""

    step: int
    sparsity_scale: float = 1.0  # sparsity-coefficient warmup factor in [0, 1]
    dead: torch.Tensor | None = None  # (n, d_sae) bool: latents considered dead (AuxK)
    comm: BatchComm = field(default_factory=BatchComm)  # the rest of the batch on other ranks


@dataclass
class TrainOutput:
    recon: torch.Tensor  # (n, batch, d_in)
    loss: torch.Tensor  # (n,): each SAE's loss; their sum is back-propagated
    terms: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (n,)
    fired: torch.Tensor | None = None  # (n, d_sae): number of tokens each latent fired on
    l0: torch.Tensor | None = None  # (n,): mean active latents per token


def sparse_decode(idx: torch.Tensor, vals: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """Σ_j vals[..., j] · W_dec[idx[..., j]] for every SAE, without a dense (batch, d_sae) matmul.

    idx, vals: (n, batch, k); W_dec: (n, d_sae, d_in) -> (n, batch, d_in). All SAEs are flattened
    into one embedding_bag call (one kernel); its backward gives W_dec a gradient only on the
    rows used and the values their exact gradient, which is what makes TopK training cheap.
    """
    n, batch, k = idx.shape
    d_sae, d_in = W_dec.shape[1], W_dec.shape[2]
    offsets = (torch.arange(n, device=idx.device) * d_sae)[:, None, None]
    flat_idx = (idx + offsets).reshape(n * batch, k)
    out = F.embedding_bag(flat_idx, W_dec.reshape(n * d_sae, d_in), per_sample_weights=vals.reshape(n * batch, k).to(W_dec.dtype), mode="sum")
    return out.view(n, batch, d_in)


def mse_per_sae(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the per-token SSE: (n,)."""
    return (recon - x).pow(2).sum(-1).mean(-1)


class Bank(nn.Module):
    """Base class of all architectures' banks (see the module docstring)."""

    name: ClassVar[str]
    Hyper: ClassVar[type]
    #: decoder rows kept at unit norm, with the radial gradient component removed
    unit_norm_decoder: ClassVar[bool] = True
    #: scale of decoder rows at init (unit-norm banks ignore it)
    init_decoder_norm: ClassVar[float] = 1.0
    #: the encoder starts as the decoder's transpose times this
    init_encoder_scale: ClassVar[float] = 1.0
    #: extra per-SAE tensors exported to the checkpoint beside W_enc/b_enc/W_dec/b_dec
    extra_tensors: ClassVar[tuple[str, ...]] = ()
    #: train_forward's reconstruction is what encode/decode give (False: the trainer also
    #: measures inference mode, e.g. BatchTopK's batch-level top-k vs its learned threshold)
    train_matches_inference: ClassVar[bool] = True

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        hypers: list[Any],
        *,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
    ):
        """``generator``: one for the whole bank, or one per SAE — then each SAE's init is
        independent of which other SAEs share its bank (how the trainer seeds, so a sweep split
        over ranks trains the same SAEs as one process)."""
        super().__init__()
        n = len(hypers)
        self.d_in, self.d_sae, self.n = d_in, d_sae, n
        self.hypers = list(hypers)
        if isinstance(generator, Sequence):
            if len(generator) != n:
                raise ValueError(f"{len(generator)} generators for a bank of {n} SAEs")
            w = torch.stack([torch.randn(d_sae, d_in, generator=g) for g in generator]) if n else torch.empty(0, d_sae, d_in)
        else:
            gen = generator if generator is not None else torch.Generator().manual_seed(0)
            w = torch.randn(n, d_sae, d_in, generator=gen)
        w = w / w.norm(dim=-1, keepdim=True) * self.init_decoder_norm  # (n, d_sae, d_in)
        self.W_dec = nn.Parameter(w)
        self.W_enc = nn.Parameter(w.transpose(1, 2) * self.init_encoder_scale)  # (n, d_in, d_sae), tied init
        self.b_enc = nn.Parameter(torch.zeros(n, d_sae))
        self.b_dec = nn.Parameter(torch.zeros(n, d_in))

    # -- hyperparameters ------------------------------------------------------------------------
    def hyper_tensor(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Per-SAE hyperparameter ``name`` as an (n,) tensor on the bank's device."""
        return torch.tensor([getattr(h, name) for h in self.hypers], dtype=dtype, device=self.W_enc.device)

    # -- forward pieces -------------------------------------------------------------------------
    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """(x − b_dec) W_enc + b_enc for every SAE. x: (batch, d_in) or (n, batch, d_in)."""
        xc = (x if x.dim() == 3 else x.unsqueeze(0)) - self.b_dec[:, None, :]  # (n, batch, d_in)
        return torch.baddbmm(self.b_enc[:, None, :], xc, self.W_enc)  # (n, batch, d_sae)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Dense decode: f (n, batch, d_sae) -> (n, batch, d_in)."""
        return torch.baddbmm(self.b_dec[:, None, :], f, self.W_dec)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Inference-time latents (n, batch, d_sae), non-negative, zero where inactive."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def train_forward(self, x: torch.Tensor, ctx: TrainContext) -> TrainOutput:
        raise NotImplementedError

    # -- constraints ----------------------------------------------------------------------------
    @torch.no_grad()
    def normalize_decoder(self) -> None:
        if self.unit_norm_decoder:
            self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def post_step(self) -> None:
        """Constraints applied after every optimizer step (unit-norm decoder rows, ...)."""
        self.normalize_decoder()

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove the gradient component parallel to each (unit) decoder row, so Adam's step
        does not fight the renormalisation."""
        if self.unit_norm_decoder and self.W_dec.grad is not None:
            w, g = self.W_dec, self.W_dec.grad
            g.sub_((g * w).sum(-1, keepdim=True) * w)

    @torch.no_grad()
    def init_b_dec(self, b: torch.Tensor) -> None:
        """Set every SAE's decoder bias to ``b`` (d_in,), e.g. the data's geometric median."""
        self.b_dec.copy_(b.to(self.b_dec).expand_as(self.b_dec))

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """Data-dependent init after b_dec is set; x: (m, d_in) normalised sample. Default: none."""

    @torch.no_grad()
    def calibrate(self, batches: Iterable[torch.Tensor], comm: BatchComm | None = None) -> None:
        """Fix inference-only state from a few batches after the last step (default: nothing).
        ``batches``: (batch, d_in) normalised inputs the bank was not trained on at that point."""

    # -- export / import --------------------------------------------------------------------------
    def export(self, i: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
        """SAE ``i`` in checkpoint layout, with input normalisation ``x' = scale·x`` folded in.

        (s·x − b) W = (x − b/s)(s·W) and (f W_dec + b)/s = f (W_dec/s) + b/s, so the folded
        SAE takes and returns raw activations and its pre-activations are unchanged.
        """
        out = {
            "W_enc": self.W_enc[i].detach() * scale,
            "b_enc": self.b_enc[i].detach().clone(),
            "W_dec": self.W_dec[i].detach() / scale,
            "b_dec": self.b_dec[i].detach() / scale,
        }
        for name in self.extra_tensors:
            out[name] = self._export_extra(name, i)
        return {k: v.contiguous().float().cpu() for k, v in out.items()}

    def _export_extra(self, name: str, i: int) -> torch.Tensor:
        return getattr(self, name)[i].detach().clone()

    @torch.no_grad()
    def load_single(self, i: int, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`export` (with scale 1) for SAE ``i``."""
        for name in ("W_enc", "b_enc", "W_dec", "b_dec", *self.extra_tensors):
            if name not in tensors:
                raise ConfigError(f"{self.name} checkpoint is missing tensor {name!r}")
            self._import_tensor(name, i, tensors[name])

    def _import_tensor(self, name: str, i: int, value: torch.Tensor) -> None:
        getattr(self, name)[i].copy_(value)


def make_hyper(cls: type, arch: str, values: dict[str, Any], d_sae: int) -> Any:
    """Build and validate one SAE's hyperparameters (strict: unknown keys are errors)."""
    from sae_core.config import from_dict

    hyper = from_dict(cls, values, where=f"{arch} hyperparameters")
    if hasattr(hyper, "validate"):
        hyper.validate(d_sae)
    return hyper


class BankArchitecture(Architecture):
    """Architecture whose bank class is :attr:`Bank`; subclasses only set three attributes."""

    bank_cls: ClassVar[type[Bank]]

    @classmethod
    def build_bank(cls, d_in: int, d_sae: int, hypers: list[Any], *, device: Any = "cpu", generator=None) -> Bank:
        return cls.bank_cls(d_in, d_sae, hypers, generator=generator).to(device)

    @classmethod
    def hyper_fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls.Hyper)]

    @classmethod
    def bank_key(cls, hyper: Any) -> tuple:
        """SAEs share a bank only if their keys are equal: the hyperparameters that change the
        bank's structure rather than a per-SAE value (e.g. Matryoshka's base encoder)."""
        return ()
