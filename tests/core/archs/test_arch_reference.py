"""Every architecture's bank, stepped by the trainer's own step function, against the plain
single-SAE references of ``sae_reference`` (written from the papers, trained with torch's Adam).

Banks hold SAEs with *mixed* hyperparameters drawn from their valid ranges and dead latents
(so AuxK runs); each step compares every SAE's loss, the gradient of every parameter as applied
(after the decoder projection) and the parameters after the update. The same checks run for
transcoder banks (input encoded uncentred, a separate target of another width reconstructed)
against the references' transcoder mode.
"""

from __future__ import annotations

import random

import pytest
import torch
from helpers.sae_reference import RefSAE, RefTrainer
from sae_core import TrainContext
from sae_core.archs import topk_select
from sae_core.archs.ops import make_hyper
from sae_core.archs.topk import TopKBank
from sae_core.plugins import get_registry
from sae_core.train.optim import BankAdam
from sae_core.train.step import bank_step

D_IN, D_SAE, B, N, STEPS = 10, 40, 48, 3, 4
#: TopK variants: AuxK forced onto each path (sae_core.archs.dead_block): ragged entries, the dense
#: block of dead latents, or a mix within one bank (plain "topk" takes the default ratio); and the
#: latents chosen in chunks of 7 tokens (sae_core.archs.topk_select.CPU_ROWS; B = 48: a short last one)
TOPK_VARIANTS = {"topk-raggedaux": {"aux_block_ratio": 0.0}, "topk-blockaux": {"aux_block_ratio": float("inf")},
                 "topk-mixedaux": {"aux_block_ratio": 3.0}, "topk-chunked": {"CPU_ROWS": 7}}
ARCHS = ["relu", "topk", "batchtopk", "jumprelu", "gated", "matryoshka-topk", "matryoshka-batchtopk", *TOPK_VARIANTS]


@pytest.fixture(autouse=True)
def _topk_variant(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    callspec = getattr(request.node, "callspec", None)
    for key, value in TOPK_VARIANTS.get(callspec.params.get("arch") if callspec else None, {}).items():
        monkeypatch.setattr(TopKBank if key == "aux_block_ratio" else topk_select, key, value)


def random_hyper(arch: str, rng: random.Random) -> dict:
    """One SAE's hyperparameters, drawn from the architecture's valid ranges."""
    if arch in ("relu", "gated"):
        return {"l1_coeff": rng.uniform(0.05, 3.0)}
    if arch == "jumprelu":
        h = {"l0_coeff": rng.uniform(0.01, 2.0), "bandwidth": rng.uniform(0.1, 1.0),
             "init_threshold": rng.uniform(0.05, 0.5)}
        if rng.random() < 0.6:
            h["target_l0"] = float(rng.randint(2, 20))
        return h
    h = {"k": rng.randint(1, 12), "aux_coeff": rng.uniform(0.0, 0.3)}
    if rng.random() < 0.7:
        h["aux_k"] = rng.randint(1, 25)
    if arch.startswith("matryoshka"):
        h["base"] = arch.split("-")[1]
        cuts = sorted(rng.sample(range(1, D_SAE), rng.randint(0, 3)))
        h["prefixes"] = [*cuts, D_SAE]
    if "batchtopk" in arch:
        h["threshold_momentum"] = rng.uniform(0.5, 0.999)
    return h


def arch_name(arch: str) -> str:
    return arch.split("-")[0]


def build_bank(arch: str, hypers: list[dict], seed: int = 0, d_out: int | None = None):
    name = arch_name(arch)
    cls = get_registry().get("architecture", name).factory
    kw = {} if d_out is None else {"d_out": d_out}  # d_out: a bank of transcoders
    bank = cls.build_bank(D_IN, D_SAE, [make_hyper(cls.Hyper, name, h, D_SAE) for h in hypers],
                          generator=[torch.Generator().manual_seed(seed + i) for i in range(len(hypers))], **kw)
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():  # non-trivial values everywhere the equations could misplace them
        bank.b_enc.copy_(torch.randn(bank.b_enc.shape, generator=gen) * 0.2)
        bank.b_dec.copy_(torch.randn(bank.b_dec.shape, generator=gen) * 0.2)
        if name == "gated":
            # encoder columns of norm 1 (the default init's 0.1 leaves rows that never fire on these
            # batches: their decoder gradient is the projection's float32 residue, ~1e-9, which
            # Adam's first step turns into an O(lr) move the float64 reference does not make)
            bank.W_enc.mul_(1.0 / type(bank).init_encoder_scale)
            bank.r_mag.copy_(torch.randn(bank.r_mag.shape, generator=gen) * 0.3)
            bank.b_mag.copy_(torch.randn(bank.b_mag.shape, generator=gen) * 0.2)
        if name == "jumprelu":
            bank.threshold.copy_(torch.rand(bank.threshold.shape, generator=gen) * 0.6)
    return bank


def dead_masks(n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, d_sae): SAE 0 has no dead latent, SAE 1 a few, the others many."""
    dead = torch.rand(n, D_SAE, generator=gen) < torch.linspace(0.0, 0.7, n)[:, None]
    dead[0] = False
    dead[1, :3] = True
    return dead


def ref_tensors(bank, i: int) -> dict[str, torch.Tensor]:
    names = ["W_enc", "b_enc", "W_dec", "b_dec"] + [n for n in ("threshold", "r_mag", "b_mag")
                                                    if isinstance(getattr(bank, n, None), torch.nn.Parameter)]
    return {n: getattr(bank, n)[i] for n in names}


def batches(seed: int):
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(D_IN, D_IN, generator=gen)
    return [torch.randn(B, D_IN, generator=gen) @ mix + 0.5 for _ in range(STEPS)]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("seed", [0, 1])
def test_bank_steps_match_paper_reference(arch: str, seed: int) -> None:
    rng = random.Random(f"{arch}-{seed}")
    hypers = [random_hyper(arch, rng) for _ in range(N)]
    lrs = torch.tensor([rng.choice([1e-3, 3e-3, 1e-2]) for _ in range(N)])
    bank = build_bank(arch, hypers, seed)
    opt = BankAdam({k: p for k, p in bank.named_parameters() if p.requires_grad})
    refs = [RefSAE.from_tensors(arch_name(arch), {**h, **bank.hypers[i].__dict__}, ref_tensors(bank, i))
            for i, h in enumerate(hypers)]
    trainers = [RefTrainer(r, lr=float(lrs[i]), grad_clip=type(bank).grad_clip) for i, r in enumerate(refs)]
    dead = dead_masks(N, torch.Generator().manual_seed(seed))
    for step, x in enumerate(batches(seed)):
        for i, ref in enumerate(refs):  # same starting point each step: each step's error is its own
            with torch.no_grad():
                for k, v in ref_tensors(bank, i).items():
                    ref.params[k].copy_(v)
        scale = 0.7 if step < 2 else 1.0  # sparsity warmup factor
        out = bank_step(bank, opt, x, TrainContext(step=step, sparsity_scale=scale, dead=dead), lrs,
                        grad_clip=type(bank).grad_clip)  # the trainer's default for the architecture
        for i, (ref, tr) in enumerate(zip(refs, trainers, strict=True)):
            loss, grads = tr.step(x, dead[i], sparsity_scale=scale)
            where = f"{arch} SAE {i} step {step} hyper {hypers[i]}"
            torch.testing.assert_close(out.loss[i].double(), loss, rtol=2e-5, atol=2e-5, msg=f"loss, {where}")
            for name, g in grads.items():
                got = getattr(bank, name).grad[i].double()
                torch.testing.assert_close(got, g, rtol=1e-4, atol=1e-5 * max(1.0, float(g.abs().max())),
                                           msg=f"grad {name}, {where}")
            for name, v in ref.params.items():
                torch.testing.assert_close(getattr(bank, name)[i].double(), v.detach(), rtol=1e-4, atol=1e-5,
                                           msg=f"{name} after step, {where}")
            if ref.threshold_ema is not None:
                torch.testing.assert_close(bank.threshold[i].double(), torch.full((D_SAE,), ref.threshold_ema, dtype=torch.float64),
                                           rtol=1e-5, atol=1e-6, msg=f"running threshold, {where}")


@pytest.mark.parametrize("arch", ARCHS)
def test_bank_with_mixed_hyperparameters_equals_each_sae_alone(arch: str) -> None:
    """Several optimizer steps of a mixed bank (per-SAE lr, dead latents so AuxK runs) give each
    SAE exactly the parameters it gets in a bank of its own."""
    rng = random.Random(arch)
    hypers = [random_hyper(arch, rng) for _ in range(4)]
    lrs = torch.tensor([1e-3, 3e-3, 2e-3, 5e-3])
    bank = build_bank(arch, hypers)
    singles = []
    for i in range(len(hypers)):
        one = build_bank(arch, [hypers[i]])
        one.load_state_dict({k: v[i : i + 1].clone() for k, v in bank.state_dict().items()}, strict=False)
        singles.append(one)
    dead = dead_masks(len(hypers), torch.Generator().manual_seed(3))
    runs = [(bank, lrs, dead), *[(s, lrs[i : i + 1], dead[i : i + 1]) for i, s in enumerate(singles)]]
    opts = [BankAdam({k: p for k, p in b.named_parameters() if p.requires_grad}) for b, _, _ in runs]
    for step, x in enumerate(batches(7) * 2):
        for (b, lr, d), opt in zip(runs, opts, strict=True):
            bank_step(b, opt, x, TrainContext(step=step, sparsity_scale=0.8, dead=d), lr, grad_clip=type(b).grad_clip)
    for i, single in enumerate(singles):
        for k, v in single.state_dict().items():
            torch.testing.assert_close(bank.state_dict()[k][i], v[0], rtol=1e-5, atol=1e-6,
                                       msg=f"{arch} {k} SAE {i} {hypers[i]}")


# -- transcoders ------------------------------------------------------------------------------------
D_OUT = 7  # the target's width differs from the input's: a misplaced d_in/d_out fails on shapes


def target_batches(seed: int, xs: list[torch.Tensor], d_out: int = D_OUT) -> list[torch.Tensor]:
    """A nonlinear function of each input batch (an MLP's output, say), offset from the origin."""
    gen = torch.Generator().manual_seed(seed + 5)
    w = torch.randn(D_IN, d_out, generator=gen) / D_IN**0.5
    return [torch.tanh(x @ w) * 2.0 - 0.7 for x in xs]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("seed,d_out", [(0, D_OUT), (1, D_IN)])
def test_transcoder_bank_steps_match_paper_reference(arch: str, seed: int, d_out: int) -> None:
    rng = random.Random(f"tc-{arch}-{seed}")
    hypers = [random_hyper(arch, rng) for _ in range(N)]
    lrs = torch.tensor([rng.choice([1e-3, 3e-3, 1e-2]) for _ in range(N)])
    bank = build_bank(arch, hypers, seed, d_out=d_out)
    assert bank.transcoder and bank.W_dec.shape == (N, D_SAE, d_out) and bank.b_dec.shape == (N, d_out)
    bank.init_input_bias(torch.randn(D_IN, generator=torch.Generator().manual_seed(seed + 9)) * 0.5)
    opt = BankAdam({k: p for k, p in bank.named_parameters() if p.requires_grad})
    refs = [RefSAE.from_tensors(arch_name(arch), {**h, **bank.hypers[i].__dict__}, ref_tensors(bank, i), b_in=bank.b_in[i])
            for i, h in enumerate(hypers)]
    trainers = [RefTrainer(r, lr=float(lrs[i]), grad_clip=type(bank).grad_clip) for i, r in enumerate(refs)]
    dead = dead_masks(N, torch.Generator().manual_seed(seed))
    xs = batches(seed)
    for step, (x, y) in enumerate(zip(xs, target_batches(seed, xs, d_out), strict=True)):
        for i, ref in enumerate(refs):
            with torch.no_grad():
                for k, v in ref_tensors(bank, i).items():
                    ref.params[k].copy_(v)
        scale = 0.7 if step < 2 else 1.0
        out = bank_step(bank, opt, x, TrainContext(step=step, sparsity_scale=scale, dead=dead, target=y), lrs,
                        grad_clip=type(bank).grad_clip)
        assert out.recon.shape == (N, B, d_out)
        for i, (ref, tr) in enumerate(zip(refs, trainers, strict=True)):
            loss, grads = tr.step(x, dead[i], sparsity_scale=scale, target=y)
            where = f"{arch} transcoder {i} step {step} hyper {hypers[i]}"
            torch.testing.assert_close(out.loss[i].double(), loss, rtol=2e-5, atol=2e-5, msg=f"loss, {where}")
            for name, g in grads.items():
                got = getattr(bank, name).grad[i].double()
                torch.testing.assert_close(got, g, rtol=1e-4, atol=1e-5 * max(1.0, float(g.abs().max())),
                                           msg=f"grad {name}, {where}")
            for name, v in ref.params.items():
                torch.testing.assert_close(getattr(bank, name)[i].double(), v.detach(), rtol=1e-4, atol=1e-5,
                                           msg=f"{name} after step, {where}")
            if ref.threshold_ema is not None:
                torch.testing.assert_close(bank.threshold[i].double(), torch.full((D_SAE,), ref.threshold_ema, dtype=torch.float64),
                                           rtol=1e-5, atol=1e-6, msg=f"running threshold, {where}")


@pytest.mark.parametrize("arch", ARCHS)
def test_transcoder_bank_with_mixed_hyperparameters_equals_each_alone(arch: str) -> None:
    """A mixed bank of transcoders gives each the parameters it gets in a bank of its own."""
    rng = random.Random(f"tc-{arch}")
    hypers = [random_hyper(arch, rng) for _ in range(4)]
    lrs = torch.tensor([1e-3, 3e-3, 2e-3, 5e-3])
    bank = build_bank(arch, hypers, d_out=D_OUT)
    with torch.no_grad():  # a different fixed input centre for each transcoder
        bank.b_in.copy_(torch.randn(bank.b_in.shape, generator=torch.Generator().manual_seed(11)))
    singles = []
    for i in range(len(hypers)):
        one = build_bank(arch, [hypers[i]], d_out=D_OUT)
        one.load_state_dict({k: v[i : i + 1].clone() for k, v in bank.state_dict().items()}, strict=False)
        singles.append(one)
    dead = dead_masks(len(hypers), torch.Generator().manual_seed(3))
    runs = [(bank, lrs, dead), *[(s, lrs[i : i + 1], dead[i : i + 1]) for i, s in enumerate(singles)]]
    opts = [BankAdam({k: p for k, p in b.named_parameters() if p.requires_grad}) for b, _, _ in runs]
    xs = batches(7)
    pairs = list(zip(xs, target_batches(7, xs), strict=True)) * 2
    for step, (x, y) in enumerate(pairs):
        for (b, lr, d), opt in zip(runs, opts, strict=True):
            bank_step(b, opt, x, TrainContext(step=step, sparsity_scale=0.8, dead=d, target=y), lr,
                      grad_clip=type(b).grad_clip)
    for i, single in enumerate(singles):
        for k, v in single.state_dict().items():
            torch.testing.assert_close(bank.state_dict()[k][i], v[0], rtol=1e-5, atol=1e-6,
                                       msg=f"{arch} transcoder {k} SAE {i} {hypers[i]}")


def test_transcoder_bank_refuses_a_missing_target_and_sae_banks_a_given_one() -> None:
    tc, sae = build_bank("topk", [{"k": 3}], d_out=D_OUT), build_bank("topk", [{"k": 3}])
    x = batches(0)[0]
    with pytest.raises(ValueError, match="target"):
        tc.train_forward(x, TrainContext(step=0))
    with pytest.raises(ValueError, match="not a transcoder"):
        sae.train_forward(x, TrainContext(step=0, target=x))
