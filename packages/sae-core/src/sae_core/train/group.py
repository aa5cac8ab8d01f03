"""The group trainer: every SAE of one data group trained on one shared stream of batches.

A sweep is split into *groups* by what changes the data stream (layer, token filter, batch size,
normalisation). Each group reads every batch once; within it SAEs of one architecture and shape
form a *bank* (parameters stacked on a leading ``n_saes`` dim) and every bank trains on that same
batch with batched matmuls. Different shapes form separate banks on the same batch.

Transcoders: a group whose data sets ``layer_out`` reads two layers of each token — the input
``layer`` and the target ``layer_out`` — normalises each by its own scale, builds its banks with
``d_out`` and passes the target as ``TrainContext.target``; every metric is against the target.

This module builds the banks and steps them; what is written down around the steps (metrics,
state, checkpoints, stopping) is :mod:`sae_core.train.bookkeeping`, and the run around the groups
is :mod:`sae_core.train.run`. Under ``torchrun`` the same global batches are split over the ranks
(:mod:`sae_core.train.parallel`), so a run gives the same SAEs (up to float summation order) at
any world size, and resumes at any other.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from sae_core.dist import Dist
from sae_core.errors import RunInterrupted, SAEError
from sae_core.protocols.architecture import Bank, BatchComm, TrainContext
from sae_core.protocols.batch_plan import BatchPlan
from sae_core.stores.batching import with_mixing
from sae_core.train.bookkeeping import GroupBookkeeping
from sae_core.train.checks import NonFiniteWatch, check_sample
from sae_core.train.config import DataConfig, SAEConfig, TrainConfig
from sae_core.train.init import geometric_median, norm_scale
from sae_core.train.live.e2e import EndToEnd
from sae_core.train.metrics import MetricsLog, fvu_from_sums
from sae_core.train.optim import BankAdam
from sae_core.train.parallel import DistBatchComm, average_grads, owners, sae_seeds
from sae_core.train.schedule import lr_factor, sparsity_factor
from sae_core.train.signals import StopRequest
from sae_core.train.step import bank_step
from sae_core.train.transfer import transfer_dtype
from sae_core.train.validation import Validation, inference_sums
from sae_core.validation_split import ExampleSplit, Selection


@dataclass
class Loop:
    """What one :meth:`GroupTrainer.run` carries from step to step."""

    stream: Iterator[tuple[torch.Tensor, torch.Tensor]]  # (x, y) normalised batches
    autocast: Any  # bf16 autocast on CUDA, else a null context
    reduce_grads: Callable[[Bank], None] | None  # data parallel: average gradients over ranks
    watch: NonFiniteWatch
    stop: StopRequest
    check_every_step: bool  # one process on CPU: the NaN check is free, so the error names the exact step
    bar: Any = None  # tqdm progress bar (rank 0, progress on)
    ran: int = 0  # steps of this call (stop_after)
    t_last: float = 0.0  # when the current log window began (samples_per_s)
    samples_last: int = 0  # samples of the current log window


class StepPlan(NamedTuple):
    """One step's schedule: its index, lr and sparsity factors, and whether it logs and evaluates."""

    step: int
    lr_f: float
    sparsity: float
    log_now: bool
    eval_now: bool


class GroupTrainer(GroupBookkeeping):
    """Trains every SAE of one data group on one shared stream of batches.

    Under ``torchrun`` (``dist.world > 1``) the group is spread over the ranks as set by
    ``train.parallel`` (see :mod:`sae_core.train.parallel`); with one process both modes are the
    plain single-process trainer.
    """

    def __init__(self, config: TrainConfig, reader: Any, data: DataConfig, saes: list[SAEConfig], out: Path, gi: int,
                 dist: Dist | None = None):
        reader = with_mixing(reader, data.mixing_plan())  # the epoch's order ("buffer": a live run's)
        self.cfg, self.reader, self.data, self.saes, self.out, self.gi = config, reader, data, saes, out, gi
        self.dist = dist = dist or Dist()
        s = config.train
        self.device = torch.device(dist.device(s.device))
        self.layer = reader.layer_index(data.layer)
        self.d_in = reader.meta.d_model
        #: transcoders: the target layer (None: SAEs), and the layers each batch reads
        self.layer_out = reader.layer_index(data.layer_out) if data.transcoder else None
        self.read_layers = [self.layer] if self.layer_out is None else [self.layer, self.layer_out]
        self.scale_out: float | None = None  # transcoders: the target's normalisation scale
        split = data.split()
        #: training reads the train side of the validation split (None: no split, every example)
        self.select = Selection(split, "train") if split.active else None
        self._check_enough_samples(split)
        self.e2e = self._end_to_end()  # live only: the spliced model's output in the loss
        self.val = Validation(reader, layer=self.layer, layer_out=self.layer_out, tokens=data.tokens, max_tokens=s.val_tokens,
                              select=Selection(split, "val") if split.active else None,
                              batch_size=data.batch_size, device=self.device)
        self.eval_every = s.eval_every or s.log_every
        self.best_val: dict[str, float] = {}  # keep_best: lowest validation FVU so far, per SAE
        self.banks, self.members = self._build_banks(self._place_saes())
        self.opts = [
            BankAdam({k: p for k, p in b.named_parameters() if p.requires_grad}, betas=(s.adam_beta1, s.adam_beta2))
            for b in self.banks
        ]
        self.lrs = [torch.tensor([m.lr for m in ms], device=self.device) for ms in self.members]
        self.since_fired = [torch.zeros(b.n, b.d_sae, device=self.device) for b in self.banks]
        self.fired_window = [torch.zeros(b.n, b.d_sae, device=self.device) for b in self.banks]
        self.last_metrics: dict[str, dict[str, Any]] = {}
        self.tokens_window = 0
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.scale = 1.0
        self.state_dir = out / "state" / f"group-{gi}"
        self.warmup = s.lr_warmup_steps or max(1, s.steps // 20)
        self.dead_window = s.dead_window(self.data.batch_size)  # tokens: see TrainSettings.dead_window
        self.sparsity_warmup = s.sparsity_warmup_steps or max(1, s.steps // 20)
        #: set by run_training: SIGINT/SIGTERM stop the loop at a step boundary
        self.stop: StopRequest | None = None
        self.saved_step: int | None = None  # step of the last state saved or loaded
        self.logs: dict[str, MetricsLog] = {}

    # -- construction ----------------------------------------------------------------------------
    def _check_enough_samples(self, split: ExampleSplit) -> None:
        """At least one batch of training samples (outside the validation split)."""
        data, reader = self.data, self.reader
        n_samples = reader.n_tokens(data.tokens, select=self.select)
        if n_samples < data.batch_size:
            held = f" outside the validation split ({split.fraction:g} of examples)" if split.active else ""
            raise SAEError(
                f"cache {reader.path} has {n_samples} {data.tokens!r} samples{held}, fewer than one batch "
                f"({data.batch_size}); lower --batch-size or cache more data"
            )

    def _end_to_end(self) -> Any:
        """``--e2e`` (live only): the spliced model's loss term (None: off)."""
        s, dist = self.cfg.train, self.dist
        if not s.e2e:
            return None

        data_parallel = dist.active and s.parallel == "data"
        return EndToEnd(self.reader, mode=s.e2e, coeff=s.e2e_coeff, layer=self.layer, tokens=self.data.tokens,
                        rank=dist.rank if data_parallel else 0, world=dist.world if data_parallel else 1)

    def _place_saes(self) -> list[SAEConfig]:
        """This rank's SAEs: all of them, or its share in ``sae`` mode (then each rank writes the
        state and checkpoints of its own)."""
        saes, dist = self.saes, self.dist
        self.shard_saes = dist.active and self.cfg.train.parallel == "sae"
        owner = owners(saes, dist.world) if self.shard_saes else [0] * len(saes)
        mine = [m for m, o in zip(saes, owner, strict=True) if o == dist.rank] if self.shard_saes else saes
        #: ranks that write state files (each its own SAEs'), and the SAEs this rank writes out
        self.writer_ranks = sorted(set(owner))
        self.owned = {m.name for m in mine} if (self.shard_saes or dist.is_main) else set()
        self.comm = DistBatchComm(dist) if dist.active and not self.shard_saes else BatchComm()
        return mine

    def _build_banks(self, mine: list[SAEConfig]) -> tuple[list[Bank], list[list[SAEConfig]]]:
        """One bank per architecture, shape and structural key (e.g. Matryoshka's base encoder),
        each SAE initialised from its own seed (as if trained alone); the banks and their SAEs."""
        from sae_core.plugins import get_component  # lazy: loads pluggy

        by_bank: dict[tuple[Any, ...], list[tuple[SAEConfig, Any]]] = {}
        for sae in mine:
            arch = get_component("architecture", sae.arch).factory
            hyper = arch.make_hyper(sae.hyper, sae.d_sae)
            by_bank.setdefault((sae.arch, sae.d_sae, arch.bank_key(hyper)), []).append((sae, hyper))
        seeds = sae_seeds(self.cfg.train.seed, self.saes)
        banks: list[Bank] = []
        members: list[list[SAEConfig]] = []
        for (arch_name, d_sae, _), pairs in by_bank.items():
            arch = get_component("architecture", arch_name).factory
            group = [m for m, _ in pairs]
            gens = [torch.Generator().manual_seed(seeds[m.name]) for m in group]
            tc = {} if self.layer_out is None else {"d_out": self.reader.meta.d_model}  # one d_model per cache
            banks.append(arch.build_bank(self.d_in, d_sae, [h for _, h in pairs], device=self.device, generator=gens,
                                         **tc))
            members.append(group)
        return banks, members

    # -- data -----------------------------------------------------------------------------------
    def _stream(self):
        """Normalised batches ``(x, y)``: the input and what the SAEs reconstruct (``y is x`` for
        SAEs; a transcoder's target layer otherwise)."""
        s, dist = self.cfg.train, self.dist
        dtype = transfer_dtype(self.reader.meta.dtype, self.device)  # half caches cross to a GPU as stored
        while True:
            for b in self.reader.batches(BatchPlan(
                self.data.batch_size, layers=self.read_layers, tokens=self.data.tokens, seed=s.seed,
                epoch=self.epoch, start_batch=self.batch_in_epoch, device=self.device, part=(dist.rank, dist.world),
                select=self.select, dtype=dtype,
            )):
                b = b.float()  # (batch, layers, d) fp32 on the device (no-op when it already is)
                self.batch_in_epoch += 1
                if self.shard_saes:
                    b = dist.all_gather_cat(b)  # (batch, layers, d): every rank's SAEs see the whole batch
                x = b[:, 0] * self.scale  # (batch / world, d_in): this rank's slice (the whole batch in sae mode)
                yield x, (x if self.scale_out is None else b[:, 1] * self.scale_out)
            self.epoch += 1
            self.batch_in_epoch = 0

    def _init_from_data(self) -> None:
        """Normalisation scale and geometric-median b_dec from a few batches of a side stream."""
        s = self.cfg.train
        xs = []
        for i, x in enumerate(self.reader.batches(BatchPlan(self.data.batch_size, layers=self.read_layers,
                                                            tokens=self.data.tokens, seed=s.seed + 7919,
                                                            select=self.select))):
            xs.append(x)
            if i + 1 >= s.norm_batches:
                break
        both_layers = torch.cat(xs)  # (m, layers, d)
        check_sample(both_layers, self.reader, layer=self.read_layers if self.layer_out is not None else self.layer,
                     tokens=self.data.tokens, batch_size=self.data.batch_size, seed=s.seed + 7919, n_batches=len(xs),
                     select=self.select)
        sample = both_layers[:, 0]  # (m, d_in)
        scale = norm_scale(sample) if self.data.normalize else 1.0
        median = geometric_median(sample[:8192] * scale).float()  # (d_in,)
        head = [scale]
        if self.layer_out is not None:  # a transcoder's target: its own scale; b_dec starts at its median
            target = both_layers[:, 1]
            scale_out = norm_scale(target) if self.data.normalize else 1.0
            median = torch.cat([geometric_median(target[:8192] * scale_out).float(), median])  # (d_out + d_in,)
            head = [scale, scale_out]
        # every rank computes the same; rank 0's copy is authoritative (no drift across GPUs)
        both = self.dist.broadcast_(torch.cat([torch.tensor(head), median.cpu()]).to(self.device))
        self.scale = float(both[0])
        if self.layer_out is not None:
            self.scale_out = float(both[1])
        medians = both[len(head):]
        for bank in self.banks:
            bank.init_b_dec(medians[: bank.d_out])  # the median of what it reconstructs
            if bank.transcoder:
                bank.init_input_bias(medians[bank.d_out :])  # the encoder's fixed input centre
            bank.init_from_data(sample[:8192].to(self.device) * self.scale)

    # -- training -------------------------------------------------------------------------------
    def run(self, *, resume: bool, progress: bool, stop_after: int | None, wandb: Any = None) -> None:
        """Train to ``train.steps`` (from the saved state with ``resume``), then calibrate, measure
        and export every SAE. ``stop_after``: stop after that many steps of this call, state saved
        (:class:`~sae_core.train.bookkeeping.StopTraining`)."""
        resumed = self.load() if resume else False
        if not resumed:
            self._init_from_data()
        self._warn_no_validation()
        self.logs = self._open_logs(resumed)
        loop = self._start_loop(progress)
        try:
            while self.step < self.cfg.train.steps:
                self._stop_if_requested(loop)  # at a step boundary, on every rank at the same step
                records, plan = self._train_step(loop)
                self._after_step(loop, records, plan, stop_after=stop_after, wandb=wandb)
        except KeyboardInterrupt:  # a second Ctrl-C (or no handler): maybe mid-step, so nothing is saved
            last = f"step {self.saved_step}" if self.saved_step is not None else "none yet"
            raise RunInterrupted(f"interrupted at step {self.step} without saving; the last saved state ({last}) "
                                 f"stands: continue from it with `sae train --resume --out {self.out}`", 2) from None
        finally:
            if loop.bar is not None:
                loop.bar.close()
        self.save()
        self._finalize(loop.stream)
        self._export()

    def _warn_no_validation(self) -> None:
        if self.dist.is_main and self.data.val_fraction > 0 and not self.val.n_tokens:
            import sys

            print(f"warning: the validation split ({self.data.val_fraction:g} of examples) of cache "
                  f"{self.reader.path} holds no {self.data.tokens!r} token; training without validation "
                  "metrics (raise --val-fraction, or cache more examples)", file=sys.stderr)

    def _start_loop(self, progress: bool) -> Loop:
        """The stream from the current position, autocast, progress bar and NaN watch of a run."""
        dist = self.dist
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else contextlib.nullcontext()
        )
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
        bar = None
        if progress and dist.is_main:
            from tqdm.auto import tqdm

            batch = self.data.batch_size  # the global batch, whatever the number of ranks
            ranks = f", {dist.world} ranks" if dist.active else ""
            bar = tqdm(total=self.cfg.train.steps * batch, initial=self.step * batch, unit="tok", unit_scale=True,
                       desc=f"group {self.gi} ({len(self.saes)} SAEs{ranks})", dynamic_ncols=True, smoothing=0.05)
        return Loop(
            stream=self._stream(), autocast=autocast,
            reduce_grads=(lambda bank: average_grads(bank, dist)) if self.comm.world > 1 else None,
            watch=NonFiniteWatch([b.n for b in self.banks], self.device),
            stop=self.stop or StopRequest(),  # not entered: never set
            check_every_step=not dist.active and self.device.type == "cpu",
            bar=bar, t_last=time.perf_counter(),
        )

    def _train_step(self, loop: Loop) -> tuple[list[dict[str, Any]], StepPlan]:
        """One step of every bank on the next batch; the metric records if it is a log step."""
        s, batch = self.cfg.train, self.data.batch_size
        x, y = next(loop.stream)
        step = self.step
        loop.watch.note(step, self.epoch, self.batch_in_epoch - 1)
        eval_now = self.val.n_tokens > 0 and ((step + 1) % self.eval_every == 0 or step + 1 == s.steps)
        plan = StepPlan(step=step, lr_f=lr_factor(step, s.steps, self.warmup, s.lr_decay_frac),
                        sparsity=sparsity_factor(step, self.sparsity_warmup), eval_now=eval_now,
                        log_now=(step + 1) % s.log_every == 0 or step + 1 == s.steps or eval_now)
        records: list[dict[str, Any]] = []
        for bi, bank in enumerate(self.banks):
            records += self._bank_step(bi, bank, x, y, plan, loop)
        self.tokens_window += batch
        loop.samples_last += batch
        self.step += 1
        loop.ran += 1
        if loop.bar is not None:
            loop.bar.update(batch)
        return records, plan

    def _bank_step(self, bi: int, bank: Bank, x: torch.Tensor, y: torch.Tensor, plan: StepPlan,
                   loop: Loop) -> list[dict[str, Any]]:
        """Step bank ``bi`` on ``x`` (reconstructing ``y``), update its firing counters; its
        records on a log step. ``x``, ``y``: (batch / world, d)."""
        s, autocast = self.cfg.train, loop.autocast
        dead = self.since_fired[bi] >= self.dead_window
        ctx = TrainContext(step=plan.step, sparsity_scale=plan.sparsity, dead=dead, comm=self.comm,
                           target=None if y is x else y)
        infer = None  # what the checkpoint would do, same weights (only where training differs)
        if plan.log_now and not bank.train_matches_inference:
            with autocast:
                infer = self._infer(bank, x, y)
        e2e = (lambda bank: self.e2e.loss(bank, self.scale)) if self.e2e is not None else None
        lr_f = plan.lr_f
        out = bank_step(bank, self.opts[bi], x, ctx, self.lrs[bi] * lr_f, autocast=autocast,
                        reduce_grads=loop.reduce_grads, extra_loss=e2e,
                        grad_clip=type(bank).grad_clip if s.grad_clip is None else s.grad_clip)
        loop.watch.update(bi, plan.step, out.loss)
        with torch.no_grad():
            fired = out.fired.float()
            if self.comm.world > 1:
                self.dist.all_reduce_(fired)
            self.since_fired[bi].add_(self.data.batch_size).masked_fill_(fired > 0, 0)
            self.fired_window[bi].add_(fired)
        if not plan.log_now:
            return []
        val = self.val.metrics(bank, self.scale, self.scale_out) if plan.eval_now else None
        return self._records(bi, out, y, lr_f, loop.samples_last, loop.t_last, infer, val)

    @torch.no_grad()
    def _infer(self, bank: Bank, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference-mode (encode/decode) SSE sum (n,) against ``y`` (``x`` itself for SAEs) and
        mean L0 (n,) of ``bank`` on ``x`` (:func:`~sae_core.train.validation.inference_sums`)."""
        sse, l0, _ = inference_sums(bank, x, y)
        return sse.float(), (l0 / x.shape[0]).float()

    @torch.no_grad()
    def _finalize(self, stream: Any) -> None:
        """Calibrate inference-only state and measure every SAE as it will be saved.

        The next ``final_batches`` batches of the stream (not trained on by the final weights)
        go to :meth:`Bank.calibrate` (BatchTopK's threshold) and then give each SAE's final
        FVU and L0 in inference mode — the numbers cfg.json and sweep.json report.
        """
        pairs = [next(stream) for _ in range(self.cfg.train.final_batches)]  # (x, y): y is x for SAEs
        batches = [x for x, _ in pairs]
        n_tok = sum(x.shape[0] for x in batches) * (self.dist.world if self.comm.world > 1 else 1)
        xs = torch.stack([torch.cat([y.double().sum(0), y.double().pow(2).sum().view(1)]) for _, y in pairs]).sum(0)
        if self.comm.world > 1:
            self.dist.all_reduce_(xs)
        for bi, bank in enumerate(self.banks):
            bank.calibrate(batches, self.comm)
            rows = torch.zeros(2, bank.n, dtype=torch.float64, device=self.device)  # SSE, Σ L0 over tokens
            for x, y in pairs:
                sse, l0 = self._infer(bank, x, y)
                rows[0] += sse.double()
                rows[1] += l0.double() * x.shape[0]
            if self.comm.world > 1:
                self.dist.all_reduce_(rows)
            fvu = fvu_from_sums(rows[0], xs[:-1], xs[-1], n_tok)
            val = self.val.metrics(bank, self.scale, self.scale_out) if self.val.n_tokens else {}
            for i, m in enumerate(self.members[bi]):
                last = self.last_metrics.setdefault(m.name, {})
                last.update(fvu=float(fvu[i]), l0=float(rows[1, i] / n_tok), final_tokens=n_tok)
                last.update({k: float(v[i]) for k, v in val.items()})
                if val:
                    last["val_tokens"] = int(self.val.n_tokens)
