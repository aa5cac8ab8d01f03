"""Training details no end result shows: the scheduled lr reaches every parameter update, the
sparsity warmup's exact values reach the loss, each epoch of a mixing plan has its own order, and
end-to-end training splices the rows its batch's window hands out, different rows per batch.

Each test is written against an independent reference (a float64 Adam, the schedule formulas,
the window arithmetic of the buffer plan), and each kills a mutant of ``bench/mutations.py``
(``lr-schedule-not-applied``, ``sparsity-warmup-off-by-one``, ``e2e-rows-same-each-batch``,
``e2e-rows-first-of-window``, ``buffer-mixing-epoch-ignored``, ``store-shuffle-epoch-ignored``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers.stores import gaussian_cache

STEPS, WARMUP, DECAY_FRAC, LR = 20, 4, 0.25, 1e-2


def _lr_schedule(s: int) -> float:
    """The documented schedule at step ``s`` (0-based): linear warmup over WARMUP steps (step s
    uses (s+1)/WARMUP), constant, linear decay to 0 over the last DECAY_FRAC of the steps."""
    decay = int(STEPS * DECAY_FRAC)
    return LR * min(1.0, (s + 1) / WARMUP, (STEPS - s) / decay)


def test_scheduled_lr_reaches_every_parameter_update(tmp_path: Path, monkeypatch) -> None:
    """Every Adam update of a training run (warmup, constant, decay) equals a float64 reference
    Adam fed the same gradients with the *scheduled* lr: an lr computed and logged but never
    applied, or applied at the wrong step, changes the update."""
    from sae_core.train import expand, run_training
    from sae_core.train.optim import BankAdam

    original = BankAdam.step
    ref_state: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    checked: list[int] = []

    def step(self: BankAdam, lr: torch.Tensor) -> None:
        s = len(checked)  # the trainer's step (one bank, one update per step)
        before = {k: p.detach().double().clone() for k, p in self.params.items()}
        grads = {k: p.grad.detach().double().clone() for k, p in self.params.items() if p.grad is not None}
        original(self, lr)
        b1, b2 = self.betas
        for k, g in grads.items():
            m, v = ref_state.get(k, (np.zeros(g.shape), np.zeros(g.shape)))
            g = g.numpy()
            m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
            ref_state[k] = (m, v)
            t = s + 1
            expected = -_lr_schedule(s) * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + self.eps)
            actual = (self.params[k].detach().double() - before[k]).numpy()
            np.testing.assert_allclose(actual, expected, rtol=2e-3, atol=2e-7, err_msg=f"step {s} {k}")
        checked.append(s)

    monkeypatch.setattr(BankAdam, "step", step)
    cache = gaussian_cache(tmp_path / "c", n=2000)
    cfg = expand(str(cache), 16, {"batch_size": 100}, {"arch": "relu", "exp_factor": 2, "lr": LR, "l1_coeff": 0.5},
                 {"steps": STEPS, "log_every": 5, "lr_warmup_steps": WARMUP, "lr_decay_frac": DECAY_FRAC},
                 str(tmp_path / "run"))
    run_training(cfg, progress=False)
    assert checked == list(range(STEPS))
    assert {_lr_schedule(s) for s in checked} >= {LR / 4, LR, LR / 5}  # warmup, plateau and decay all ran


def test_sparsity_warmup_reaches_the_loss_with_its_exact_values(tmp_path: Path) -> None:
    """The L1 weight each step applied, read back from the logged terms (loss − mse = λ·w(s)·l1),
    equals w(s) = min(1, (s + 1) / W) for step s (0-based) of a W-step warmup."""
    from sae_core.train import expand, run_training

    w_steps, l1_coeff = 4, 3.0
    cache = gaussian_cache(tmp_path / "c", n=1000)
    cfg = expand(str(cache), 16, {"batch_size": 100}, {"arch": "relu", "exp_factor": 2, "lr": 1e-3, "l1_coeff": l1_coeff},
                 {"steps": 7, "log_every": 1, "sparsity_warmup_steps": w_steps}, str(tmp_path / "run"))
    run_training(cfg, progress=False)
    (log_file,) = (tmp_path / "run").glob("*/metrics.jsonl")
    log = [json.loads(x) for x in log_file.read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 8))
    applied = [(r["loss"] - r["mse"]) / (l1_coeff * r["l1"]) for r in log]
    assert applied == pytest.approx([min(1.0, (s + 1) / w_steps) for s in range(7)], rel=1e-4)


# -- the mixing plan: a different order every epoch ---------------------------------------------------------
def test_every_epoch_has_its_own_order_with_the_same_seed(tmp_path: Path) -> None:
    """Same seed, epochs 0, 1, 2: the buffer plan and the store's own shuffle give each epoch a
    different order of the same samples (and epoch e twice gives the same order)."""
    from sae_core.protocols.batch_plan import BatchPlan, Mixing
    from sae_core.stores import open_reader
    from sae_core.stores.batching import epoch_batch_ids

    reader = open_reader(gaussian_cache(tmp_path / "c", n=1000))
    for mixing in (Mixing("buffer", 100), None):
        def plan(epoch: int, mixing: Any = mixing) -> np.ndarray:
            return np.concatenate(list(epoch_batch_ids(reader, BatchPlan(32, seed=5, epoch=epoch, mixing=mixing,
                                                                         drop_last=False))))

        orders = [plan(e) for e in range(3)]
        assert np.array_equal(plan(1), orders[1])
        for e in range(3):
            assert np.array_equal(np.sort(orders[e]), np.arange(1000))
        for a in range(3):
            for b in range(a + 1, 3):
                assert (orders[a] != orders[b]).mean() > 0.5, (mixing, a, b)
    # the local store's own shuffle (shuffled chunks, what `batches` reads without a Mixing)
    def store_plan(epoch: int) -> list[np.ndarray]:
        return [reader.batch_sample_ids(BatchPlan(100, layers=[1], seed=5, epoch=epoch), b) for b in range(10)]

    plans = [store_plan(e) for e in range(3)]
    assert all(np.array_equal(a, b) for a, b in zip(store_plan(2), plans[2], strict=True))
    for e in range(3):
        assert np.array_equal(np.sort(np.concatenate(plans[e])), np.arange(1000))
    for a in range(3):
        for b in range(a + 1, 3):
            assert sum(not np.array_equal(p, q) for p, q in zip(plans[a], plans[b], strict=True)) >= 8, (a, b)
    data = [torch.cat(list(reader.batches(BatchPlan(100, layers=[1], seed=5, epoch=e)))) for e in (0, 1)]
    assert not torch.equal(data[0], data[1])
    torch.testing.assert_close(data[0].sum(0), data[1].sum(0))  # the same samples, in another order


# -- end-to-end training's rows ------------------------------------------------------------------------------
def _live_mlp(n: int = 120) -> Any:
    from sae_core.train.live import LiveConfig
    from sae_core.train.live.source import LiveSource

    cfg = LiveConfig(adapter="mlp", model="rand-mlp", layers=["0", "-1"], data=f"gaussian:{n}", model_batch_size=16)
    return LiveSource(cfg, train_seed=7, val_tokens=0)


@pytest.mark.parametrize("rows_per_batch", [3, 15])
def test_e2e_rows_are_the_batch_windows_own_rows_and_change_every_batch(rows_per_batch: int) -> None:
    """With each training batch the live source hands out ``e2e_rows`` rows of that batch's mixing
    window (examples [wE, (w+1)E), the window whose samples the batch ends on), in a permutation
    seeded by (seed, epoch, window) that cycles: consecutive batches get the next rows, so a window
    hands out min(batches · rows, E) distinct rows, each once before any repeats."""
    from sae_core.protocols.batch_plan import BatchPlan, Mixing

    e, batch = 40, 16  # one example = one row = one sample (the mlp adapter: one token)
    source = _live_mlp()
    try:
        source.e2e_rows = rows_per_batch
        per_window: dict[tuple[int, int], list[np.ndarray]] = {}
        for epoch in (0, 1):
            for x in source.batches(BatchPlan(batch, layers=[1], seed=7, epoch=epoch, mixing=Mixing("buffer", e))):
                assert x.shape[0] == batch
                rows = source.e2e_batch
                assert rows is not None and rows.shape == (rows_per_batch, 1)
                ex = rows["example"][:, 0]
                w = int(ex[0]) // e
                # the batch's own window: the latest window the batch's samples come from
                ids = source._record  # the stream's current window (what a resume saves)
                assert ids is not None and ids["window"] == w
                assert (ex // e == w).all(), (ex, w)
                per_window.setdefault((epoch, w), []).append(ex)
        assert len(per_window) == 2 * 3
        for (_epoch, w), handed in per_window.items():
            seq = np.concatenate(handed)
            first = seq[:e]
            assert len(np.unique(first)) == len(first), (w, seq)  # a permutation, cycled: no repeat before E
            if len(seq) > e:
                assert np.array_equal(seq[e:2 * e], first[: len(seq[e:2 * e])])
        # the order of a window's rows is drawn per (epoch, window)
        assert any(not np.array_equal(np.concatenate(per_window[(0, w)]), np.concatenate(per_window[(1, w)]))
                   for (ep, w) in per_window if ep == 0 and (1, w) in per_window)
    finally:
        source.close()


# -- gradient clipping ([train] grad_clip) ------------------------------------------------------------------
# each built-in architecture's default clipping norm (Bank.grad_clip; 0: none), as measured against
# SAELens with bench/quality.py (docs/benchmarks.md, "Gradient clipping per architecture")
CLIPPED_BY_DEFAULT = {"relu": 1.0, "gated": 1.0, "topk": 1.0, "batchtopk": 1.0, "matryoshka": 1.0, "jumprelu": 0.0}


def test_grad_clip_clips_each_sae_alone_like_torch(tmp_path: Path, monkeypatch) -> None:
    """clip_grad_norms on a bank equals torch.nn.utils.clip_grad_norm_ run on each SAE's own
    parameters (one SAE's large gradient does not shrink another's); the trainer applies it with
    [train] grad_clip, and refuses a negative value in one line."""
    import sae_core.train.step as step_mod
    from sae_core.errors import ConfigError
    from sae_core.plugins import get_component
    from sae_core.train import expand, run_training
    from sae_core.train.step import clip_grad_norms

    arch = get_component("architecture", "gated").factory
    bank = arch.build_bank(6, 12, [arch.make_hyper({"l1_coeff": 1.0}, 12) for _ in range(3)],
                           generator=[torch.Generator().manual_seed(i) for i in range(3)])
    gen = torch.Generator().manual_seed(0)
    for p in bank.parameters():
        p.grad = torch.randn(p.shape, generator=gen) * torch.tensor([0.01, 1.0, 30.0]).view(-1, *[1] * (p.dim() - 1))
    refs = []
    for i in range(3):
        leaves = [torch.nn.Parameter(p.detach()[i].clone()) for p in bank.parameters()]
        for leaf, p in zip(leaves, bank.parameters(), strict=True):
            leaf.grad = p.grad[i].clone()
        norm = torch.nn.utils.clip_grad_norm_(leaves, 1.0)
        refs.append(([leaf.grad for leaf in leaves], float(norm)))
    norms = clip_grad_norms(bank, 1.0)
    for i, (grads, norm) in enumerate(refs):
        assert float(norms[i]) == pytest.approx(norm, rel=1e-5)
        for g, p in zip(grads, bank.parameters(), strict=True):
            torch.testing.assert_close(p.grad[i], g, rtol=1e-5, atol=1e-8)
    assert float(norms[0]) < 1.0  # the small one untouched
    seen: list[float] = []
    original = step_mod.clip_grad_norms

    def spy(b: Any, max_norm: float) -> torch.Tensor:
        seen.append(max_norm)
        return original(b, max_norm)

    monkeypatch.setattr(step_mod, "clip_grad_norms", spy)
    cache = gaussian_cache(tmp_path / "c", n=500)
    cfg = expand(str(cache), 16, {"batch_size": 100}, {"arch": "relu", "exp_factor": 2, "lr": 1e-3},
                 {"steps": 3, "log_every": 3, "grad_clip": 0.5}, str(tmp_path / "run"))
    run_training(cfg, progress=False)
    assert seen == [0.5] * 3
    seen.clear()  # unset: the architecture's default, measured per architecture (docs/benchmarks.md)
    for arch, clip in CLIPPED_BY_DEFAULT.items():
        sae = {"arch": arch, "exp_factor": 2, "lr": 1e-3, **({"k": 2} if "k" in arch or arch == "matryoshka" else {})}
        cfg = expand(str(cache), 16, {"batch_size": 100}, sae, {"steps": 2, "log_every": 2}, str(tmp_path / f"run-{arch}"))
        run_training(cfg, progress=False)
        assert seen == ([clip] * 2 if clip else []), arch
        seen.clear()
    with pytest.raises(ConfigError, match="grad_clip must be >= 0"):
        expand(str(cache), 16, {"batch_size": 100}, {"arch": "relu"}, {"grad_clip": -1.0}, str(tmp_path / "bad"))


@pytest.mark.parametrize("fused", [False, True])
def test_bank_adam_is_torch_adam_with_each_saes_own_lr(fused: bool) -> None:
    """Both updates of BankAdam (the plain one GPUs take, the fused kernel CPUs take) equal
    torch.optim.Adam run on each SAE's slices with that SAE's lr, over several steps."""
    from sae_core.train.optim import BankAdam

    gen = torch.Generator().manual_seed(0)
    params = {"W": torch.nn.Parameter(torch.randn(3, 4, 5, generator=gen)), "b": torch.nn.Parameter(torch.randn(3, 5, generator=gen))}
    lrs = torch.tensor([1e-3, 3e-2, 1e-1])
    opt = BankAdam(params, betas=(0.8, 0.99), fused=fused)
    assert opt.fused is fused
    refs = [{k: torch.nn.Parameter(p.detach()[i].clone()) for k, p in params.items()} for i in range(3)]
    ref_opts = [torch.optim.Adam(list(r.values()), lr=float(lrs[i]), betas=(0.8, 0.99), foreach=False) for i, r in enumerate(refs)]
    for _ in range(4):
        grads = {k: torch.randn(p.shape, generator=gen) for k, p in params.items()}
        for k, p in params.items():
            p.grad = grads[k].clone()
        opt.step(lrs)
        for i, (r, o) in enumerate(zip(refs, ref_opts, strict=True)):
            for k, leaf in r.items():
                leaf.grad = grads[k][i].clone()
            o.step()
    for i, r in enumerate(refs):
        for k, leaf in r.items():
            torch.testing.assert_close(params[k].detach()[i], leaf.detach(), rtol=1e-6, atol=1e-7)
    assert opt.step_count == 4


def test_bank_adam_takes_any_gradient_layout_and_no_gradient() -> None:
    """A gradient whose strides differ from its parameter's (a contiguous one on the transposed
    W_enc layout) is updated element by element as torch.optim.Adam does (the fused kernel would
    pair elements by memory position, so the plain update runs); a step without any gradient
    counts the step and changes nothing."""
    from sae_core.train.optim import BankAdam

    gen = torch.Generator().manual_seed(1)
    W = torch.nn.Parameter(torch.randn(2, 5, 3, generator=gen).transpose(1, 2))  # (2, 3, 5), not contiguous
    ref = [torch.nn.Parameter(W.detach()[i].clone()) for i in range(2)]
    opt = BankAdam({"W": W})
    ref_opts = [torch.optim.Adam([r], lr=1e-2, foreach=False) for r in ref]
    for _ in range(3):
        g = torch.randn(2, 3, 5, generator=gen)  # contiguous: strides differ from W's
        W.grad = g.clone()
        opt.step(torch.full((2,), 1e-2))
        for i, r in enumerate(ref):
            r.grad = g[i].clone()
            ref_opts[i].step()
    for i, r in enumerate(ref):
        torch.testing.assert_close(W.detach()[i], r.detach(), rtol=1e-6, atol=1e-7)
    W.grad = None
    before = W.detach().clone()
    opt.step(torch.full((2,), 1e-2))
    assert opt.step_count == 4 and torch.equal(W.detach(), before)


def test_clip_norms_do_not_overflow_float32() -> None:
    """Gradients whose rows' norms overflow float32 (a diverging run) are still clipped to the
    norm, not zeroed: the norm is then taken exactly in float64."""
    from sae_core.plugins import get_component
    from sae_core.train.step import clip_grad_norms

    arch = get_component("architecture", "relu").factory
    bank = arch.build_bank(4, 8, [arch.make_hyper({}, 8)], generator=[torch.Generator().manual_seed(0)])
    for p in bank.parameters():
        p.grad = torch.full(p.shape, 3e19)
    norms = clip_grad_norms(bank, 1.0)
    total = sum(p.numel() for p in bank.parameters())
    assert float(norms[0]) == pytest.approx(3e19 * total**0.5, rel=1e-6)
    grads = torch.cat([p.grad.reshape(-1) for p in bank.parameters()])
    assert float(grads.double().norm()) == pytest.approx(1.0, rel=1e-4)
