"""SAE architectures: everything the trainer, the checkpoint loader and the exporters call.

An architecture is an :class:`Architecture` subclass (registered under its ``name``) naming a
hyperparameter dataclass ``Hyper`` and a :class:`Bank` subclass. A *bank* holds ``n`` SAEs of one
architecture and shape with every parameter stacked on a leading ``n_saes`` dimension
(``W_enc: (n, d_in, d_sae)``), so all SAEs of a sweep group train with batched matmuls on the
batch they share. Per-SAE hyperparameters (k, L1 coefficient, ...) become ``(n,)`` tensors
through :meth:`Bank.hyper_tensor`.

What a bank must implement is :meth:`Bank.encode` (inference codes) and :meth:`Bank.train_forward`
(reconstruction, per-SAE loss and firing counts); the rest has working defaults: decoding,
unit-norm decoder rows with the radial gradient projected out, b_dec initialisation, exporting
one SAE to the checkpoint layout (with the input normalisation folded in) and loading it back.

Codes are zero where a latent is inactive. Non-negative codes are the default; an architecture
whose codes may be negative sets ``non_negative_codes = False`` and every consumer treats firing
as ``code != 0`` (:mod:`sae_core.firing_rule`).

Notation used in the architecture docstrings: x ∈ R^d_in, pre = (x − b_dec) W_enc + b_enc,
x̂ = f W_dec + b_dec, SSE = ||x − x̂||².

**Transcoders.** A bank built with ``d_out`` is a bank of transcoders: it encodes an input x
(d_in) and reconstructs a *target* y (d_out), another activation of the same tokens (an MLP's
input and output, say). Input and output are separate spaces: b_dec lives in the output space
(ŷ = f W_dec + b_dec, W_dec: (d_sae, d_out), b_dec: (d_out,)) and is never subtracted from the
input. The encoder instead centres x by a separate, fixed input bias ``b_in`` (d_in,) — the
input's geometric median, set by :meth:`Bank.init_input_bias`, a buffer, not trained:
pre = (x − b_in) W_enc + b_enc — which :meth:`Bank.export` folds into b_enc
(b_enc − b_in W_enc), so a saved transcoder is pre = x W_enc + b_enc exactly as SAELens's
``Transcoder``. Every reconstruction term of the loss (MSE, AuxK's residual) is measured
against y, which the trainer passes as :attr:`TrainContext.target`. A bank without ``d_out`` is
an ordinary SAE, computed exactly as before. An architecture opts in with
``supports_transcoder = True`` once its bank reads the target through :meth:`Bank.target` and
centres its input through :meth:`Bank.pre_acts`, :meth:`Bank.encoder_input` or
:meth:`Bank.input_bias` (and folds any extra encoder-side tensor in :meth:`Bank.export`).
"""

from __future__ import annotations

import dataclasses
from abc import ABCMeta, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from sae_core.dataclass_parsing import from_dict
from sae_core.errors import ConfigError, ExportError, PluginError
from sae_core.firing_rule import firing
from sae_core.interop.saelens_mapping import saelens_mapping


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
    #: transcoders: the (batch, d_out) activations to reconstruct (None for SAEs: the input itself)
    target: torch.Tensor | None = None


@dataclass
class TrainOutput:
    """What :meth:`Bank.train_forward` returns for one batch; the trainer back-propagates
    ``loss.sum()`` and tracks dead latents with ``fired`` (a latent fires where its code != 0)."""

    recon: torch.Tensor  # (n, batch, d_out): the reconstruction of the target (d_out = d_in for SAEs)
    loss: torch.Tensor  # (n,): each SAE's loss; their sum is back-propagated
    fired: torch.Tensor  # (n, d_sae): number of tokens of the batch each latent fired on
    l0: torch.Tensor  # (n,): mean number of latents firing per token
    terms: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (n,), logged


def firing_stats(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``fired`` (n, d_sae) and ``l0`` (n,) of dense codes (n, batch, d_sae), by the one firing
    rule (code != 0): the two firing fields of a :class:`TrainOutput`."""
    active = firing(codes).float()  # (n, batch, d_sae)
    return active.sum(1), active.sum(-1).mean(-1)


class Bank(nn.Module, metaclass=ABCMeta):
    """``n`` SAEs of one architecture and shape, parameters stacked on a leading ``n_saes`` dim.

    The trainer calls, in order: the constructor (``generator`` seeds the init), :meth:`init_b_dec`
    and :meth:`init_from_data` on a normalised sample, then per step :meth:`train_forward`,
    :meth:`project_decoder_grad` after backward, :meth:`post_step` after the optimizer; after the
    last step :meth:`calibrate`, :meth:`encode`/:meth:`decode` for the final metrics and
    :meth:`export` for each checkpoint. Resumable state is ``state_dict()`` (register buffers for
    non-parameter state). The loader calls the constructor with one hyper and :meth:`load_single`.

    ``d_out`` (a keyword argument, None for SAEs) makes it a bank of transcoders (see the module
    docstring): ``transcoder`` is then True and ``W_dec``/``b_dec`` live in the d_out-dim space.
    """

    #: the architecture's name, for messages
    name: ClassVar[str] = ""
    #: the architecture's hyperparameter dataclass (informative; the trainer uses Architecture.Hyper)
    Hyper: ClassVar[type]
    #: decoder rows kept at unit norm, with the radial gradient component removed
    unit_norm_decoder: ClassVar[bool] = True
    #: scale of decoder rows at init (unit-norm banks ignore it)
    init_decoder_norm: ClassVar[float] = 1.0
    #: the encoder starts as the decoder's transpose times this
    init_encoder_scale: ClassVar[float] = 1.0
    #: each SAE's gradient is clipped to this norm before Adam when ``[train] grad_clip`` is not
    #: set (0: no clipping); see sae_core.train.step.clip_grad_norms
    grad_clip: ClassVar[float] = 0.0
    #: extra per-SAE tensors exported to the checkpoint beside W_enc/b_enc/W_dec/b_dec; each is an
    #: attribute (parameter or buffer) of shape (n, ...) whose row i is SAE i's tensor
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
        d_out: int | None = None,
    ):
        """``generator``: one for the whole bank, or one per SAE — then each SAE's init is
        independent of which other SAEs share its bank (how the trainer seeds, so a sweep split
        over ranks trains the same SAEs as one process). ``d_out``: a bank of transcoders whose
        target has this width (None: SAEs)."""
        super().__init__()
        n = len(hypers)
        self.d_in, self.d_sae, self.n = d_in, d_sae, n
        #: transcoders: the decoder writes a separate d_out-dim output space, the input is not centred
        self.transcoder = d_out is not None
        self.d_out = d_in if d_out is None else int(d_out)
        self.hypers = list(hypers)
        if self.transcoder:
            self._init_transcoder(generator)
            return
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

    def _init_transcoder(self, generator: torch.Generator | Sequence[torch.Generator] | None) -> None:
        """Untied init (input and output are different spaces): decoder rows and encoder columns
        are independent random directions of norm ``init_decoder_norm`` and ``init_decoder_norm ·
        init_encoder_scale`` (the norms a tied init gives), the decoder drawn first."""
        n, d_in, d_sae, d_out = self.n, self.d_in, self.d_sae, self.d_out

        def draw(g: torch.Generator, *lead: int) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.randn(*lead, d_sae, d_out, generator=g), torch.randn(*lead, d_sae, d_in, generator=g)

        if isinstance(generator, Sequence):
            if len(generator) != n:
                raise ValueError(f"{len(generator)} generators for a bank of {n} SAEs")
            pairs = [draw(g) for g in generator]
            dec = torch.stack([p[0] for p in pairs]) if n else torch.empty(0, d_sae, d_out)
            enc = torch.stack([p[1] for p in pairs]) if n else torch.empty(0, d_sae, d_in)
        else:
            dec, enc = draw(generator if generator is not None else torch.Generator().manual_seed(0), n)
        dec = dec / dec.norm(dim=-1, keepdim=True) * self.init_decoder_norm  # (n, d_sae, d_out)
        enc = enc / enc.norm(dim=-1, keepdim=True) * self.init_decoder_norm * self.init_encoder_scale
        self.W_dec = nn.Parameter(dec)
        self.W_enc = nn.Parameter(enc.transpose(1, 2).contiguous())  # (n, d_in, d_sae)
        self.b_enc = nn.Parameter(torch.zeros(n, d_sae))
        self.b_dec = nn.Parameter(torch.zeros(n, d_out))
        #: the fixed centre of the input (not trained; folded into b_enc at export)
        self.register_buffer("b_in", torch.zeros(n, d_in))

    # -- hyperparameters ------------------------------------------------------------------------
    def hyper_tensor(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Per-SAE hyperparameter ``name`` as an (n,) tensor on the bank's device."""
        return torch.tensor([getattr(h, name) for h in self.hypers], dtype=dtype, device=self.W_enc.device)

    # -- forward pieces -------------------------------------------------------------------------
    def input_bias(self) -> torch.Tensor:
        """What the encoder subtracts from its input, (n, d_in): b_dec for SAEs, the fixed
        input centre ``b_in`` for transcoders (their b_dec lives in the output space)."""
        return self.b_in if self.transcoder else self.b_dec

    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """(n, batch, d_in) input of every SAE's encoder: x − b_dec (SAEs) or x − b_in
        (transcoders). x: (batch, d_in) or (n, batch, d_in)."""
        return (x if x.dim() == 3 else x.unsqueeze(0)) - self.input_bias()[:, None, :]

    def target(self, x: torch.Tensor, ctx: TrainContext) -> torch.Tensor:
        """What the loss reconstructs: x itself (SAEs) or ``ctx.target`` (transcoders)."""
        if self.transcoder:
            if ctx.target is None:
                raise ValueError("a transcoder bank needs its target: pass TrainContext(target=y)")
            return ctx.target
        if ctx.target is not None:
            raise ValueError("TrainContext.target is given, but this bank is not a transcoder (built without d_out)")
        return x

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """(x − b_dec) W_enc + b_enc for every SAE ((x − b_in) W_enc + b_enc for transcoders).
        x: (batch, d_in) or (n, batch, d_in)."""
        if self.transcoder:
            return torch.baddbmm(self.b_enc[:, None, :], self.encoder_input(x), self.W_enc)
        xc = (x if x.dim() == 3 else x.unsqueeze(0)) - self.b_dec[:, None, :]  # (n, batch, d_in)
        return torch.baddbmm(self.b_enc[:, None, :], xc, self.W_enc)  # (n, batch, d_sae)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Dense decode: f (n, batch, d_sae) -> (n, batch, d_out)."""
        return torch.baddbmm(self.b_dec[:, None, :], f, self.W_dec)

    @abstractmethod
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Inference-time codes (n, batch, d_sae) of x (batch, d_in): zero where a latent is
        inactive, and non-negative unless the architecture sets ``non_negative_codes = False``."""

    def splice_encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes (n, batch, d_sae) of x (batch, d_in) for end-to-end training (:mod:`sae_core.train.live.e2e`):
        the inference codes, differentiated the way training differentiates them. Default:
        :meth:`encode`. An architecture whose inference forward has no useful gradient for some
        parameter (JumpReLU's hard threshold) overrides it with its training estimator, equal in value."""
        return self.encode(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @abstractmethod
    def train_forward(self, x: torch.Tensor, ctx: TrainContext) -> TrainOutput:
        """One training batch x (batch, d_in): reconstruction, per-SAE loss and firing counts.
        Each SAE's loss must depend on its own parameters only (the sum is back-propagated)."""

    # -- constraints ----------------------------------------------------------------------------
    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale decoder rows to unit norm (if :attr:`unit_norm_decoder`)."""
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
            # g -= (g·w) w, without a temporary the size of W_dec (a bank's is 150 MB at n 8, 6144 x 768)
            g.addcmul_(torch.linalg.vecdot(g, w).unsqueeze(-1), w, value=-1.0)

    @torch.no_grad()
    def init_b_dec(self, b: torch.Tensor) -> None:
        """Set every SAE's decoder bias to ``b`` (d_out,), e.g. the geometric median of what it
        reconstructs (the input of an SAE, the target of a transcoder)."""
        self.b_dec.copy_(b.to(self.b_dec).expand_as(self.b_dec))

    @torch.no_grad()
    def init_input_bias(self, b: torch.Tensor) -> None:
        """Transcoders: set every SAE's fixed input centre ``b_in`` to ``b`` (d_in,), the input's
        geometric median (SAEs: nothing, their input is centred by b_dec)."""
        if self.transcoder:
            self.b_in.copy_(b.to(self.b_in).expand_as(self.b_in))

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """Data-dependent init after b_dec is set; x: (m, d_in) normalised sample of the input.
        Default: none."""

    @torch.no_grad()
    def calibrate(self, batches: Iterable[torch.Tensor], comm: BatchComm | None = None) -> None:
        """Fix inference-only state from a few batches after the last step (default: nothing).
        ``batches``: (batch, d_in) normalised inputs the bank was not trained on at that point."""

    # -- export / import --------------------------------------------------------------------------
    def export(self, i: int, scale: float = 1.0, scale_out: float | None = None) -> dict[str, torch.Tensor]:
        """SAE ``i`` in checkpoint layout, with input normalisation ``x' = scale·x`` folded in.

        (s·x − b) W = (x − b/s)(s·W) and (f W_dec + b)/s = f (W_dec/s) + b/s, so the folded
        SAE takes and returns raw activations and its pre-activations are unchanged.
        Transcoders (``scale_out``: the target's scale y' = s_out·y, default ``scale``):
        (s·x − b_in) W_enc + b_enc = x (s·W_enc) + (b_enc − b_in W_enc) and
        ŷ = (f W_dec + b_dec)/s_out, so the folded transcoder maps the raw input to the raw target
        with no input bias (:meth:`input_shift` is what b_enc absorbs).
        """
        s_out = scale if scale_out is None else scale_out
        out = {
            "W_enc": self.W_enc[i].detach() * scale,
            "b_enc": self.b_enc[i].detach().clone(),
            "W_dec": self.W_dec[i].detach() / s_out,
            "b_dec": self.b_dec[i].detach() / s_out,
        }
        if self.transcoder:
            out["b_enc"] = out["b_enc"] - self.input_shift(i)
        for name in self.extra_tensors:
            out[name] = self._export_extra(name, i)
        return {k: v.contiguous().float().cpu() for k, v in out.items()}

    def _export_extra(self, name: str, i: int) -> torch.Tensor:
        return getattr(self, name)[i].detach().clone()

    @torch.no_grad()
    def input_shift(self, i: int) -> torch.Tensor:
        """Transcoder ``i``'s b_in W_enc (d_sae,): what its encoder subtracts for the input centre,
        folded into b_enc at export (zero for SAEs, whose centre b_dec is in the checkpoint)."""
        if not self.transcoder:
            return torch.zeros_like(self.b_enc[i])
        return self.b_in[i] @ self.W_enc[i]

    @torch.no_grad()
    def load_single(self, i: int, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`export` (with scale 1) for SAE ``i`` (a transcoder's input centre
        stays zero: the checkpoint has it folded into b_enc)."""
        for name in ("W_enc", "b_enc", "W_dec", "b_dec", *self.extra_tensors):
            if name not in tensors:
                raise ConfigError(f"{self.name or type(self).__name__} checkpoint is missing tensor {name!r}")
            self._import_tensor(name, i, tensors[name])
        if self.transcoder:
            self.b_in[i].zero_()

    def _import_tensor(self, name: str, i: int, value: torch.Tensor) -> None:
        getattr(self, name)[i].copy_(value)


class Architecture:
    """An SAE architecture: its hyperparameters, its bank, and how it maps onto other formats.

    Subclasses set :attr:`name`, :attr:`Hyper` and :attr:`bank_cls`; everything else has a
    default. The class itself is registered (``register(name, MyArch)``) and never instantiated.
    """

    #: registry name, written into every checkpoint's cfg.json: never change it
    name: ClassVar[str]
    #: dataclass of one SAE's hyperparameters (k, l1_coeff, ...); may define ``validate(d_sae)``
    Hyper: ClassVar[type]
    #: the :class:`Bank` subclass that :meth:`build_bank` instantiates
    bank_cls: ClassVar[type[Bank]]
    #: False if codes may be negative; consumers then read firing as code != 0 and show signs
    non_negative_codes: ClassVar[bool] = True
    #: the SAELens architecture whose inference equals this one's ("standard", "topk",
    #: "jumprelu", "gated"), or None: then ``sae export --format saelens`` refuses it
    saelens_architecture: ClassVar[str | None] = None
    #: its bank trains transcoders (built with ``d_out``: input not centred, loss against
    #: ``TrainContext.target``); False: ``sae train --layer-out`` refuses the architecture
    supports_transcoder: ClassVar[bool] = False

    @classmethod
    def hyper_fields(cls) -> list[str]:
        """Hyperparameter names accepted in sweep files and ``--hyper`` (the Hyper's fields)."""
        return [f.name for f in dataclasses.fields(cls.Hyper)]

    @classmethod
    def make_hyper(cls, values: dict[str, Any], d_sae: int, *, strict: bool = True) -> Any:
        """One SAE's hyperparameters from ``values``, validated for ``d_sae``. ``strict``: unknown
        keys are errors (user input); lenient for cfg.json files written by other versions."""

        where = f"{cls.name} hyperparameters" if strict else "cfg.json hyper"
        hyper = from_dict(cls.Hyper, values, strict=strict, where=where)
        if hasattr(hyper, "validate"):
            hyper.validate(d_sae)
        return hyper

    @classmethod
    def bank_key(cls, hyper: Any) -> tuple:
        """SAEs share a bank only if their keys are equal: the hyperparameters that change the
        bank's structure rather than a per-SAE value (e.g. Matryoshka's base encoder)."""
        return ()

    @classmethod
    def build_bank(cls, d_in: int, d_sae: int, hypers: list[Any], *, device: str | torch.device = "cpu",
                   generator: torch.Generator | Sequence[torch.Generator] | None = None,
                   d_out: int | None = None) -> Bank:
        """A bank of ``len(hypers)`` SAEs of this architecture and shape on ``device``; with
        ``d_out``, of transcoders whose target has that width (see :attr:`supports_transcoder`)."""
        bank_cls = getattr(cls, "bank_cls", None)
        if bank_cls is None:
            raise PluginError(f"architecture {cls.__name__} sets no bank_cls; set it to its Bank subclass")
        if d_out is not None:
            cls.check_transcoder()
            return bank_cls(d_in, d_sae, hypers, generator=generator, d_out=d_out).to(device)
        return bank_cls(d_in, d_sae, hypers, generator=generator).to(device)

    @classmethod
    def check_transcoder(cls) -> None:
        """Raise a one-line :class:`ConfigError` unless this architecture trains transcoders."""
        if not cls.supports_transcoder:
            raise ConfigError(f"architecture {cls.name!r} does not support transcoders (its bank does not read "
                              "TrainContext.target); train it as an SAE (no --layer-out) or pick another architecture")

    @classmethod
    def saelens_target(cls, hyper: dict[str, Any]) -> str | None:
        """The SAELens architecture of an SAE with these hyperparameters (default: the class's
        :attr:`saelens_architecture`; Matryoshka's depends on its base encoder)."""
        return cls.saelens_architecture

    @classmethod
    def saelens_export(cls, cfg: Any, tensors: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """SAELens ``cfg.json`` and weights of one checkpoint (``cfg``: its SAECheckpointConfig,
        ``tensors``: its sae.safetensors). The default maps :meth:`saelens_target`'s equations;
        override for anything else. Raise :class:`ExportError` when there is no equivalent."""
        target = cls.saelens_target(cfg.hyper)
        if target is None:
            signed = "" if cls.non_negative_codes else " (its codes are signed; SAELens codes are not)"
            raise ExportError(f"architecture {cls.name!r} has no SAELens equivalent{signed}; export it in "
                              "another format (`sae export --help` lists them)")

        return saelens_mapping(target, cfg, tensors)
