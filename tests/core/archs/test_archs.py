"""Each architecture's bank against a plain single-SAE reference written from its equations."""

from __future__ import annotations

import pytest
import torch
from helpers.archs import assert_topk_grads_match_dense, params
from sae_core import TrainContext
from sae_core.archs.ops import make_hyper
from sae_core.plugins import get_registry

D_IN, D_SAE, B = 12, 48, 32


def build(name: str, hypers: list[dict]):
    arch = get_registry().get("architecture", name).factory
    bank = arch.build_bank(D_IN, D_SAE, [make_hyper(arch.Hyper, name, h, D_SAE) for h in hypers],
                           generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # non-trivial biases so the reference checks their placement
        bank.b_enc.normal_(0, 0.1)
        bank.b_dec.normal_(0, 0.1)
    return bank




@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(B, D_IN, generator=torch.Generator().manual_seed(2))


def test_relu_matches_reference(x) -> None:
    bank = build("relu", [{"l1_coeff": 2.0}, {"l1_coeff": 0.5}])
    out = bank.train_forward(x, TrainContext(step=0))
    for i, lam in enumerate((2.0, 0.5)):
        W_enc, b_enc, W_dec, b_dec = params(bank, i)
        f = torch.relu((x - b_dec) @ W_enc + b_enc)
        recon = f @ W_dec + b_dec
        loss = ((x - recon) ** 2).sum(-1).mean() + lam * (f * W_dec.norm(dim=1)).sum(-1).mean()
        torch.testing.assert_close(out.recon[i], recon)
        torch.testing.assert_close(out.loss[i], loss)
        torch.testing.assert_close(bank.encode(x)[i], f)


def test_topk_matches_reference_with_per_sae_k(x) -> None:
    bank = build("topk", [{"k": 3}, {"k": 7}])
    dead = torch.zeros(2, D_SAE, dtype=torch.bool)
    dead[:, :10] = True
    out = bank.train_forward(x, TrainContext(step=0, dead=dead))
    for i, k in enumerate((3, 7)):
        W_enc, b_enc, W_dec, b_dec = params(bank, i)
        pre = (x - b_dec) @ W_enc + b_enc
        v, idx = pre.topk(k, dim=-1)
        f = torch.zeros_like(pre).scatter(-1, idx, v.relu())
        recon = f @ W_dec + b_dec
        mse = ((x - recon) ** 2).sum(-1).mean()
        pre_dead = pre.masked_fill(~dead[i], float("-inf"))
        av, aidx = pre_dead.topk(min(D_IN // 2, 10), dim=-1)
        e_hat = torch.zeros_like(pre).scatter(-1, aidx, av.relu()) @ W_dec
        aux = ((x - recon - e_hat) ** 2).sum(-1).mean() / 32
        torch.testing.assert_close(out.recon[i], recon, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.loss[i], mse + aux, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(bank.encode(x)[i], f)
        assert float(out.l0[i]) <= k




def test_topk_sparse_gradients_match_dense(x) -> None:
    """The sparse encoder backward (ragged.encoder_entries) and sparse decode give autograd's dense
    gradients for every parameter, across a bank with per-SAE k and AuxK on dead latents."""
    bank = build("topk", [{"k": 3}, {"k": 7}])
    dead = torch.zeros(2, D_SAE, dtype=torch.bool)
    dead[0, :10] = True
    dead[1, 5:9] = True  # fewer dead latents than the other SAE: padded aux picks must not count
    assert_topk_grads_match_dense(bank, x, dead, (3, 7), rtol=1e-4, atol=1e-5)


def test_batchtopk_matches_reference_and_uses_threshold_at_inference(x) -> None:
    bank = build("batchtopk", [{"k": 4}])
    out = bank.train_forward(x, TrainContext(step=0))
    W_enc, b_enc, W_dec, b_dec = params(bank, 0)
    a = torch.relu((x - b_dec) @ W_enc + b_enc)
    tau = a.flatten().topk(4 * B).values[-1]
    f = a * (a >= tau)
    torch.testing.assert_close(out.recon[0], f @ W_dec + b_dec)
    assert abs(float(out.l0[0]) - 4) < 0.5
    torch.testing.assert_close(bank.threshold[0], torch.full((D_SAE,), float(tau.detach())))
    torch.testing.assert_close(bank.encode(x)[0], a * (a > tau))


def test_jumprelu_forward_and_ste_gradients(x) -> None:
    bank = build("jumprelu", [{"l0_coeff": 0.1, "bandwidth": 0.5, "init_threshold": 0.2}])
    out = bank.train_forward(x, TrainContext(step=0))
    out.loss.sum().backward()
    W_enc, b_enc, W_dec, b_dec = params(bank, 0)
    pre = (x - b_dec) @ W_enc + b_enc
    theta = torch.full((D_SAE,), 0.2)
    f = pre * (pre > theta)
    recon = f @ W_dec + b_dec
    l0 = (pre > theta).float().sum(-1).mean()
    torch.testing.assert_close(out.recon[0], recon)
    torch.testing.assert_close(out.loss[0], ((x - recon) ** 2).sum(-1).mean() + 0.1 * l0)
    # pseudo-derivatives wrt θ (parametrised directly)
    g_recon = (2 * (recon - x) / B) @ W_dec.T  # dL/df
    kern = ((pre - theta).abs() / 0.5 < 0.5).float()
    d_theta = (g_recon * -(theta / 0.5) * kern).sum(0) + 0.1 * (-(1 / 0.5) * kern).sum(0) / B
    torch.testing.assert_close(bank.threshold.grad[0], d_theta, rtol=1e-4, atol=1e-5)


def test_jumprelu_target_l0_mode(x) -> None:
    bank = build("jumprelu", [{"l0_coeff": 1.0, "target_l0": 5.0, "init_threshold": 0.2}])
    out = bank.train_forward(x, TrainContext(step=0))
    tok_l0 = (bank.pre_acts(x)[0] > 0.2).float().sum(-1)
    torch.testing.assert_close(out.terms["l0_penalty"][0], 2 / 5.0 * (tok_l0.mean() - 5.0) ** 2)


def test_jumprelu_mixed_target_and_penalty_bank_has_finite_gradients(x) -> None:
    """A target-L0 SAE beside a penalty-mode SAE must not give the latter NaN gradients."""
    bank = build("jumprelu", [{"target_l0": 5.0, "init_threshold": 0.2}, {"l0_coeff": 0.5, "init_threshold": 0.2}])
    bank.train_forward(x, TrainContext(step=0)).loss.sum().backward()
    for name, p in bank.named_parameters():
        assert torch.isfinite(p.grad).all(), name


def test_jumprelu_thresholds_are_projected_to_be_non_negative() -> None:
    """θ < 0 would let negative pre-activations through (signed codes from a non-negative SAE)."""
    bank = build("jumprelu", [{"init_threshold": 0.1}])
    with torch.no_grad():
        bank.threshold[0, :5] = -0.3
    bank.post_step()
    assert float(bank.threshold.min()) == 0.0 and float(bank.threshold[0, 5]) == pytest.approx(0.1)


def test_jumprelu_data_scaled_init_fires_each_latent_at_the_init_rate() -> None:
    """Without init_threshold, θ_j is latent j's quantile firing on init_l0/d_sae of the sample."""
    gen = torch.Generator().manual_seed(4)
    sample = torch.randn(2000, D_IN, generator=gen) * 3
    bank = build("jumprelu", [{"target_l0": 3.0}, {"init_l0": 12.0}, {"init_threshold": 0.25}])
    bank.init_from_data(sample)
    active = (bank.pre_acts(sample) > bank.threshold[:, None, :]).float()  # (3, m, d_sae)
    rate = active.mean(1)  # (3, d_sae): each latent's firing rate
    torch.testing.assert_close(rate[0], torch.full((D_SAE,), 12.0 / D_SAE), atol=2e-3, rtol=0)  # 4·target
    torch.testing.assert_close(rate[1], torch.full((D_SAE,), 12.0 / D_SAE), atol=2e-3, rtol=0)
    torch.testing.assert_close(bank.threshold[2], torch.full((D_SAE,), 0.25))  # explicit init untouched


def test_gated_matches_reference(x) -> None:
    bank = build("gated", [{"l1_coeff": 1.5}])
    with torch.no_grad():
        bank.r_mag.normal_(0, 0.3)
        bank.b_mag.normal_(0, 0.1)
    out = bank.train_forward(x, TrainContext(step=0))
    W_enc, b_gate, W_dec, b_dec = params(bank, 0)
    xc = x - b_dec
    gate = xc @ W_enc + b_gate
    mag = xc @ (W_enc * bank.r_mag[0].exp()) + bank.b_mag[0]
    f = (gate > 0) * mag.relu()
    recon = f @ W_dec + b_dec
    l1 = (gate.relu() * W_dec.norm(dim=1)).sum(-1).mean()
    aux = ((x - (gate.relu() @ W_dec + b_dec)) ** 2).sum(-1).mean()
    torch.testing.assert_close(out.recon[0], recon, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loss[0], ((x - recon) ** 2).sum(-1).mean() + 1.5 * l1 + aux, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("base", ["topk", "batchtopk"])
def test_matryoshka_nested_losses(x, base: str) -> None:
    bank = build("matryoshka", [{"k": 6, "base": base, "prefixes": [6, 24, 48]}])
    out = bank.train_forward(x, TrainContext(step=0))
    W_enc, b_enc, W_dec, b_dec = params(bank, 0)
    a = (x - b_dec) @ W_enc + b_enc
    if base == "topk":
        v, idx = a.topk(6, dim=-1)
        f = torch.zeros_like(a).scatter(-1, idx, v.relu())
    else:
        a = a.relu()
        f = a * (a >= a.flatten().topk(6 * B).values[-1])
    losses = [((x - (f[:, :m] @ W_dec[:m] + b_dec)) ** 2).sum(-1).mean() for m in (6, 24, 48)]
    torch.testing.assert_close(out.terms["nested_mse"][0], torch.stack(losses).mean(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.recon[0], f @ W_dec + b_dec, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["relu", "topk", "batchtopk", "jumprelu", "gated", "matryoshka"])
def test_export_folds_normalisation(x, name: str) -> None:
    """A bank trained on s·x, exported with scale s, maps raw x to x̂ = bank(s·x)/s — with
    non-trivial thresholds, r_mag and b_mag, so a wrongly scaled extra tensor changes the codes."""
    from sae_core.checkpoint import build_sae

    hyper = {"k": 5} if name in ("topk", "batchtopk", "matryoshka") else {}
    bank = build(name, [hyper])
    s = 3.0
    gen = torch.Generator().manual_seed(9)
    with torch.no_grad():
        if name in ("batchtopk", "matryoshka"):
            bank.calibrate([torch.randn(B, D_IN, generator=gen) * s])  # the inference threshold
        if name == "jumprelu":
            bank.threshold.copy_(torch.rand(1, D_SAE, generator=gen) * 0.8 + 0.1)
        if name == "gated":
            bank.r_mag.copy_(torch.randn(1, D_SAE, generator=gen) * 0.4)
            bank.b_mag.copy_(torch.randn(1, D_SAE, generator=gen) * 0.5)
    raw = x * 2.0 + 0.3
    sae = build_sae({"architecture": name, "d_in": D_IN, "d_sae": D_SAE, "hyper": hyper}, bank.export(0, s))
    with torch.no_grad():
        codes = bank.encode(raw * s)[0]
        assert 0 < float((codes != 0).float().mean()) < 1  # some latents on, some off: thresholds matter
        torch.testing.assert_close(sae(raw), bank(raw * s)[0] / s, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(sae.encode(raw), codes, rtol=1e-4, atol=1e-5)


def test_batchtopk_calibrated_threshold_is_the_mean_batch_threshold() -> None:
    bank = build("batchtopk", [{"k": 3}, {"k": 7}])
    gen = torch.Generator().manual_seed(3)
    xs = [torch.randn(B, D_IN, generator=gen) for _ in range(3)]
    bank.calibrate(xs)
    for i, k in enumerate((3, 7)):
        W_enc, b_enc, _, b_dec = params(bank, i)
        with torch.no_grad():
            taus = [torch.relu((x - b_dec) @ W_enc + b_enc).flatten().topk(k * B).values[-1] for x in xs]
        torch.testing.assert_close(bank.threshold[i], torch.full((D_SAE,), float(torch.stack(taus).mean())))


def test_batchtopk_running_threshold_is_seeded_then_averaged(x) -> None:
    bank = build("batchtopk", [{"k": 4, "threshold_momentum": 0.8}])
    x2 = x.flip(0) * 1.7
    taus = [float(bank.train_forward(b, TrainContext(step=i)).terms["threshold"][0]) for i, b in enumerate((x, x2))]
    torch.testing.assert_close(bank.threshold[0, 0], torch.tensor(0.8 * taus[0] + 0.2 * taus[1]))


def test_matryoshka_prefixes_are_validated() -> None:
    from sae_core.errors import ConfigError

    with pytest.raises(ConfigError, match="strictly increase and end at d_sae=48"):
        build("matryoshka", [{"k": 4, "prefixes": [6, 6, 48]}])
    with pytest.raises(ConfigError, match="end at d_sae=48"):
        build("matryoshka", [{"k": 4, "prefixes": [6, 24]}])


def test_k_larger_than_d_sae_is_an_error() -> None:
    from sae_core.errors import ConfigError

    with pytest.raises(ConfigError, match="k=99 must be between 1 and d_sae=48"):
        build("topk", [{"k": 99}])
