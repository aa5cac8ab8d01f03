"""The shared-batch multi-SAE trainer.

A sweep is split into *groups* by what changes the data stream (layer, token filter, batch size,
normalisation). Each group reads every batch once; within it SAEs of one architecture and shape
form a *bank* (parameters stacked on a leading ``n_saes`` dim) and every bank trains on that same
batch with batched matmuls. Different shapes form separate banks on the same batch.

Transcoders: a group whose data sets ``layer_out`` reads two layers of each token — the input
``layer`` and the target ``layer_out`` — normalises each by its own scale, builds its banks with
``d_out`` and passes the target as ``TrainContext.target``; every metric is against the target.

Exactness: training is a pure function of (config, cache). The data position (epoch, batch in
epoch), optimizer moments, dead-latent counters and parameters are checkpointed, so
``sae train --resume`` continues bit-for-bit on CPU. Under ``torchrun`` the same global batches
are split over the ranks (:mod:`sae_core.train.parallel`), so a run gives the same SAEs (up to
float summation order) at any world size, and resumes at any other.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import torch

from sae_core.checkpoint.cfg import SAECheckpointConfig, read_cfg
from sae_core.checkpoint.directory import save_sae
from sae_core.checkpoint.discovery import is_checkpoint
from sae_core.checkpoint.filenames import METRICS_FILE, SWEEP_FILE
from sae_core.dist import Dist
from sae_core.errors import CheckpointError, ConfigError, RunInterrupted, SAEError
from sae_core.protocols.architecture import Bank, BatchComm, TrainContext, firing_stats
from sae_core.protocols.reader import with_mixing
from sae_core.train.checks import NonFiniteWatch, check_sample, nonfinite_error
from sae_core.train.config import DataConfig, SAEConfig, TrainConfig
from sae_core.train.init import geometric_median, norm_scale
from sae_core.train.metrics import MetricsLog, fvu_from_sums
from sae_core.train.optim import BankAdam
from sae_core.train.parallel import DistBatchComm, average_grads, owners, sae_seeds
from sae_core.train.schedule import lr_factor, sparsity_factor
from sae_core.train.signals import StopRequest
from sae_core.train.state import commit, load_state, save_tensors, tensors_name
from sae_core.train.step import bank_step
from sae_core.train.transfer import transfer_dtype
from sae_core.train.validation import Validation
from sae_core.validation_split import Selection

DENSE_FREQ = 0.1  # a latent firing on more than 10% of tokens counts as dense


class StopTraining(Exception):
    """Raised internally when ``stop_after`` steps ran (time-boxed jobs, resume tests)."""


class GroupTrainer:
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
        n_samples = reader.n_tokens(data.tokens, select=self.select)
        if n_samples < data.batch_size:
            held = f" outside the validation split ({split.fraction:g} of examples)" if split.active else ""
            raise SAEError(
                f"cache {reader.path} has {n_samples} {data.tokens!r} samples{held}, fewer than one batch "
                f"({data.batch_size}); lower --batch-size or cache more data"
            )
        self.e2e = None  # end-to-end training (live only): the spliced model's output in the loss
        if s.e2e:
            from sae_core.train.live.e2e import EndToEnd

            data_parallel = dist.active and s.parallel == "data"
            self.e2e = EndToEnd(reader, mode=s.e2e, coeff=s.e2e_coeff, layer=self.layer, tokens=data.tokens,
                                rank=dist.rank if data_parallel else 0, world=dist.world if data_parallel else 1)
        self.val = Validation(reader, layer=self.layer, layer_out=self.layer_out, tokens=data.tokens, max_tokens=s.val_tokens,
                              select=Selection(split, "val") if split.active else None,
                              batch_size=data.batch_size, device=self.device)
        self.eval_every = s.eval_every or s.log_every
        self.best_val: dict[str, float] = {}  # keep_best: lowest validation FVU so far, per SAE
        self.shard_saes = dist.active and s.parallel == "sae"
        owner = owners(saes, dist.world) if self.shard_saes else [0] * len(saes)
        mine = [m for m, o in zip(saes, owner, strict=True) if o == dist.rank] if self.shard_saes else saes
        #: ranks that write state files (each its own SAEs'), and the SAEs this rank writes out
        self.writer_ranks = sorted(set(owner))
        self.owned = {m.name for m in mine} if (self.shard_saes or dist.is_main) else set()
        self.comm = DistBatchComm(dist) if dist.active and not self.shard_saes else BatchComm()
        self.banks: list[Bank] = []
        self.members: list[list[SAEConfig]] = []
        from sae_core.plugins import get_component

        # one bank per architecture, shape and structural key (e.g. Matryoshka's base encoder)
        by_bank: dict[tuple[Any, ...], list[tuple[SAEConfig, Any]]] = {}
        for sae in mine:
            arch = get_component("architecture", sae.arch).factory
            hyper = arch.make_hyper(sae.hyper, sae.d_sae)
            by_bank.setdefault((sae.arch, sae.d_sae, arch.bank_key(hyper)), []).append((sae, hyper))
        seeds = sae_seeds(s.seed, saes)
        for (arch_name, d_sae, _), pairs in by_bank.items():
            arch = get_component("architecture", arch_name).factory
            members = [m for m, _ in pairs]
            gens = [torch.Generator().manual_seed(seeds[m.name]) for m in members]
            tc = {} if self.layer_out is None else {"d_out": reader.meta.d_model}  # one d_model per cache
            self.banks.append(arch.build_bank(self.d_in, d_sae, [h for _, h in pairs], device=self.device, generator=gens,
                                              **tc))
            self.members.append(members)
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

    # -- data -----------------------------------------------------------------------------------
    def _stream(self):
        """Normalised batches ``(x, y)``: the input and what the SAEs reconstruct (``y is x`` for
        SAEs; a transcoder's target layer otherwise)."""
        s, dist = self.cfg.train, self.dist
        dtype = transfer_dtype(self.reader.meta.dtype, self.device)  # half caches cross to a GPU as stored
        while True:
            for b in self.reader.batches(
                self.data.batch_size, layers=self.read_layers, tokens=self.data.tokens, seed=s.seed,
                epoch=self.epoch, start_batch=self.batch_in_epoch, device=self.device, part=(dist.rank, dist.world),
                select=self.select, dtype=dtype,
            ):
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
        for i, x in enumerate(self.reader.batches(self.data.batch_size, layers=self.read_layers, tokens=self.data.tokens,
                                                  seed=s.seed + 7919, select=self.select)):
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

    # -- state ----------------------------------------------------------------------------------
    def _sae_tensors(self) -> dict[str, torch.Tensor]:
        """State of the SAEs this rank writes, keyed ``<sae name>/<tensor>``."""
        out: dict[str, torch.Tensor] = {}
        for bi, (bank, opt) in enumerate(zip(self.banks, self.opts, strict=True)):
            parts = {**{f"bank.{k}": v for k, v in bank.state_dict().items()},
                     **{f"opt.{k}": v for k, v in opt.state_dict().items()},
                     "since_fired": self.since_fired[bi], "fired_window": self.fired_window[bi]}
            for i, m in enumerate(self.members[bi]):
                if m.name in self.owned:
                    for k, v in parts.items():
                        # per-SAE rows keep a leading dim of 1; 0-dim tensors are bank-wide (Adam's step)
                        out[f"{m.name}/{k}"] = (v[i : i + 1] if v.dim() else v).clone()
        return out

    def save(self) -> None:
        """Commit the current state (every rank's tensors, then rank 0's ``state.json``)."""
        for log in self.logs.values():  # the metrics up to this state are durable with it
            log.sync()
        # a live source's position (window, carried samples): a cache replays from batch_in_epoch
        stream = getattr(self.reader, "stream_state", None)
        stream = stream(seed=self.cfg.train.seed, epoch=self.epoch) if stream is not None else None
        if self.owned:
            extra = {f"_stream/{k}": v for k, v in stream[1].items()} if stream and self.dist.is_main else {}
            save_tensors(self.state_dir, self.step, self.dist.rank, {**self._sae_tensors(), **extra})
        self.dist.barrier()  # every rank's file is in place before the commit
        if self.dist.is_main:
            commit(self.state_dir, [tensors_name(self.step, r) for r in self.writer_ranks], {
                "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "scale": self.scale, "tokens_window": self.tokens_window, "d_in": self.d_in,
                **({} if self.scale_out is None else {"scale_out": self.scale_out}),
                "saes": [m.name for m in self.saes], "best_val": self.best_val,
                **({"stream": stream[0]} if stream else {}),
            })
        self.dist.barrier()  # nobody writes the next state while rank 0 prunes files
        self.saved_step = self.step

    def load(self) -> bool:
        loaded = load_state(self.state_dir)
        if loaded is None:
            return False
        tensors, doc = loaded
        if int(doc["d_in"]) != self.d_in:
            raise CheckpointError(
                f"checkpoint {self.state_dir} was trained on d_model={doc['d_in']}, but cache "
                f"{self.reader.path} has d_model={self.d_in}; resume with the cache it was trained on"
            )
        for bi, (bank, opt) in enumerate(zip(self.banks, self.opts, strict=True)):
            missing = [m.name for m in self.members[bi] if f"{m.name}/since_fired" not in tensors]
            if missing:
                raise CheckpointError(f"training state {self.state_dir} has no SAE named {missing[0]!r}; "
                                      "the sweep changed since it was saved — start a new run")

            def stacked(prefix: str, keys: list[str], members: list[SAEConfig] = self.members[bi]) -> dict[str, torch.Tensor]:
                out = {}
                for k in keys:
                    try:
                        vals = [tensors[f"{m.name}/{prefix}{k}"] for m in members]
                    except KeyError as e:
                        raise CheckpointError(f"training state {self.state_dir} lacks tensor {e.args[0]}; the state "
                                              "is damaged or from another sweep — start the run again with --overwrite") from None
                    out[k] = torch.cat(vals) if vals[0].dim() else vals[0]
                return out

            bank.load_state_dict(stacked("bank.", list(bank.state_dict())))
            opt.load_state_dict(stacked("opt.", list(opt.state_dict())))
            self.since_fired[bi].copy_(stacked("", ["since_fired"])["since_fired"])
            self.fired_window[bi].copy_(stacked("", ["fired_window"])["fired_window"])
        self.step, self.epoch, self.batch_in_epoch = int(doc["step"]), int(doc["epoch"]), int(doc["batch_in_epoch"])
        self.scale, self.tokens_window = float(doc["scale"]), int(doc["tokens_window"])
        if self.layer_out is not None:
            if "scale_out" not in doc:
                raise CheckpointError(f"training state {self.state_dir} is not a transcoder's (no scale_out); the sweep "
                                      "changed since it was saved — start a new run")
            self.scale_out = float(doc["scale_out"])
        self.best_val = {k: float(v) for k, v in doc.get("best_val", {}).items()}
        if doc.get("stream") and hasattr(self.reader, "restore_stream_state"):
            self.reader.restore_stream_state(doc["stream"], {k.split("/", 1)[1]: v for k, v in tensors.items()
                                                             if k.startswith("_stream/")})
        self.saved_step = self.step
        return True

    # -- training -------------------------------------------------------------------------------
    def run(self, *, resume: bool, progress: bool, stop_after: int | None, wandb: Any = None) -> None:
        s, dist = self.cfg.train, self.dist
        batch = self.data.batch_size  # the global batch, whatever the number of ranks
        resumed = self.load() if resume else False
        if not resumed:
            self._init_from_data()
        if dist.is_main and self.data.val_fraction > 0 and not self.val.n_tokens:
            import sys

            print(f"warning: the validation split ({self.data.val_fraction:g} of examples) of cache "
                  f"{self.reader.path} holds no {self.data.tokens!r} token; training without validation "
                  "metrics (raise --val-fraction, or cache more examples)", file=sys.stderr)
        self.logs = logs = {
            m.name: MetricsLog(self.out / m.name / METRICS_FILE, resume_step=self.step if resumed else None)
            for m in self.saes
        } if dist.is_main else {}
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else contextlib.nullcontext()
        )
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
        bar = None
        if progress and dist.is_main:
            from tqdm.auto import tqdm

            ranks = f", {dist.world} ranks" if dist.active else ""
            bar = tqdm(total=s.steps * batch, initial=self.step * batch, unit="tok", unit_scale=True,
                       desc=f"group {self.gi} ({len(self.saes)} SAEs{ranks})", dynamic_ncols=True, smoothing=0.05)
        stream = self._stream()
        reduce_grads = (lambda bank: average_grads(bank, dist)) if self.comm.world > 1 else None
        ran = 0
        t_last, samples_last = time.perf_counter(), 0
        watch = NonFiniteWatch([b.n for b in self.banks], self.device)
        check_every_step = not dist.active and self.device.type == "cpu"  # a free sync: exact step in the error
        stop = self.stop or StopRequest()  # not entered: never set
        try:
            while self.step < s.steps:
                if dist.any(stop.requested):  # at a step boundary, on every rank at the same step
                    self._check_finite(watch)
                    if self.saved_step != self.step:
                        self.save()
                    raise RunInterrupted(f"stopped by {stop.name or 'a signal'} at step {self.step} of {s.steps}; "
                                         f"the state is saved: continue with `sae train --resume --out {self.out}`",
                                         stop.signum or 2)
                x, y = next(stream)
                step = self.step
                watch.note(step, self.epoch, self.batch_in_epoch - 1)
                lr_f = lr_factor(step, s.steps, self.warmup, s.lr_decay_frac)
                ctx_sparsity = sparsity_factor(step, self.sparsity_warmup)
                eval_now = self.val.n_tokens > 0 and ((step + 1) % self.eval_every == 0 or step + 1 == s.steps)
                log_now = (step + 1) % s.log_every == 0 or step + 1 == s.steps or eval_now
                records: list[dict[str, Any]] = []
                for bi, bank in enumerate(self.banks):
                    dead = self.since_fired[bi] >= self.dead_window
                    ctx = TrainContext(step=step, sparsity_scale=ctx_sparsity, dead=dead, comm=self.comm,
                                       target=None if y is x else y)
                    infer = None  # what the checkpoint would do, same weights (only where training differs)
                    if log_now and not bank.train_matches_inference:
                        with autocast:
                            infer = self._infer(bank, x, y)
                    e2e = (lambda bank: self.e2e.loss(bank, self.scale)) if self.e2e is not None else None
                    out = bank_step(bank, self.opts[bi], x, ctx, self.lrs[bi] * lr_f, autocast=autocast,
                                    reduce_grads=reduce_grads, extra_loss=e2e,
                                    grad_clip=type(bank).grad_clip if s.grad_clip is None else s.grad_clip)
                    watch.update(bi, step, out.loss)
                    with torch.no_grad():
                        fired = out.fired.float()
                        if self.comm.world > 1:
                            dist.all_reduce_(fired)
                        self.since_fired[bi].add_(batch).masked_fill_(fired > 0, 0)
                        self.fired_window[bi].add_(fired)
                    if log_now:
                        val = self.val.metrics(bank, self.scale, self.scale_out) if eval_now else None
                        records += self._records(bi, out, y, lr_f, samples_last, t_last, infer, val)
                self.tokens_window += batch
                samples_last += batch
                self.step += 1
                ran += 1
                if bar is not None:
                    bar.update(batch)
                ckpt_now = self.step % s.checkpoint_every == 0 and self.step < s.steps
                stop_now = stop_after is not None and ran >= stop_after and self.step < s.steps
                if check_every_step or log_now or ckpt_now or stop_now or self.step >= s.steps:
                    self._check_finite(watch)  # before anything of this step is written
                if log_now:
                    self._write_records(records, logs, wandb)
                    if eval_now and s.keep_best:
                        self._keep_best(records)
                    self.tokens_window = 0
                    for fw in self.fired_window:
                        fw.zero_()
                    t_last, samples_last = time.perf_counter(), 0
                if ckpt_now:
                    self.save()
                if stop_now:
                    if self.saved_step != self.step:
                        self.save()
                    raise StopTraining
        except KeyboardInterrupt:  # a second Ctrl-C (or no handler): maybe mid-step, so nothing is saved
            last = f"step {self.saved_step}" if self.saved_step is not None else "none yet"
            raise RunInterrupted(f"interrupted at step {self.step} without saving; the last saved state ({last}) "
                                 f"stands: continue from it with `sae train --resume --out {self.out}`", 2) from None
        finally:
            if bar is not None:
                bar.close()
        self.save()
        self._finalize(stream)
        self._export()

    def _check_finite(self, watch: NonFiniteWatch) -> None:
        """Raise a located error if any loss since the last check was NaN/Inf (one host sync)."""
        step = watch.check(self.dist)
        if step is not None:
            raise nonfinite_error(
                watch, step, reader=self.reader, layer=self.layer if self.layer_out is None else self.read_layers,
                tokens=self.data.tokens,
                batch_size=self.data.batch_size, seed=self.cfg.train.seed,
                names=[[m.name for m in ms] for ms in self.members], lrs=[[m.lr for m in ms] for ms in self.members],
                saved_step=self.saved_step, select=self.select)

    @torch.no_grad()
    def _infer(self, bank: Bank, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference-mode (encode/decode) SSE sum (n,) against ``y`` (``x`` itself for SAEs) and
        mean L0 (n,) of ``bank`` on ``x``."""
        f = bank.encode(x)  # (n, batch, d_sae)
        sse = (bank.decode(f).float() - y).pow(2).sum((-1, -2))
        return sse, firing_stats(f)[1]

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

    @torch.no_grad()
    def _records(self, bi: int, out: Any, x: torch.Tensor, lr_f: float, samples: int, t0: float,
                 infer: tuple[torch.Tensor, torch.Tensor] | None = None,
                 val: dict[str, torch.Tensor] | None = None) -> list[dict[str, Any]]:
        """Metric records of bank ``bi``'s SAEs over the whole (global) batch.

        ``fvu`` and ``l0`` are always inference mode (what a checkpoint of these weights does);
        where training differs (``infer`` given), the training-mode values are ``train_fvu`` and
        ``train_l0``. ``x`` is what the SAEs reconstruct (a transcoder's target).
        """
        batch = self.data.batch_size
        names = list(out.terms)
        sse_train = (out.recon.float() - x).pow(2).sum((-1, -2))
        sse, l0 = (sse_train, out.l0.float()) if infer is None else infer
        rows = torch.stack([  # (5 + terms, n): sums/means over this rank's slice
            sse, l0.float(), out.loss.detach().float(), sse_train, out.l0.float(),
            *[out.terms[k].float() for k in names],
        ]).double()
        xs = torch.cat([x.double().sum(0), x.double().pow(2).sum().view(1)])  # (d_in + 1,)
        if self.comm.world > 1:
            self.dist.all_reduce_(rows)
            self.dist.all_reduce_(xs)
            rows[1:] /= self.dist.world  # per-slice means -> whole-batch means
        f = fvu_from_sums(rows[0], xs[:-1], xs[-1], batch)  # (n,)
        f_train = fvu_from_sums(rows[3], xs[:-1], xs[-1], batch)
        freq = self.fired_window[bi] / max(self.tokens_window + batch, 1)  # (n, d_sae)
        dead = (self.since_fired[bi] >= self.dead_window).float().mean(-1)
        dense = (freq > DENSE_FREQ).float().mean(-1)
        elapsed = max(time.perf_counter() - t0, 1e-9)
        recs = []
        for i, m in enumerate(self.members[bi]):
            recs.append({
                "sae": m.name,
                "step": self.step + 1,
                "samples": (self.step + 1) * batch,
                "fvu": float(f[i]),
                "l0": float(rows[1, i]),
                "dead_frac": float(dead[i]),  # silent for the last dead_window_tokens training tokens
                "dead_window_tokens": self.dead_window,
                "dense_frac": float(dense[i]),
                "lr": float(self.lrs[bi][i]) * lr_f,
                "loss": float(rows[2, i]),
                **({} if infer is None else {"train_fvu": float(f_train[i]), "train_l0": float(rows[4, i])}),
                **{k: float(rows[5 + j, i]) for j, k in enumerate(names)},
                **({k: float(v[i]) for k, v in val.items()} if val is not None else {}),
                "samples_per_s": (samples + batch) / elapsed,
            })
        return recs

    def _write_records(self, records: list[dict[str, Any]], logs: dict[str, MetricsLog], wandb: Any) -> None:
        """Keep this rank's records for export; rank 0 writes everyone's (gathered in ``sae`` mode)
        and logs them to W&B (``wandb``: a :class:`~sae_core.train.wandb_log.WandbRuns`)."""
        for rec in records:
            self.last_metrics[rec["sae"]] = {k: v for k, v in rec.items() if k != "sae"}
        if self.shard_saes:
            records = [r for part in self.dist.all_gather_object(records) for r in part]
        if not self.dist.is_main:
            return
        for rec in records:
            name, body = rec["sae"], {k: v for k, v in rec.items() if k != "sae"}
            logs[name].write(body)
            if wandb is not None:
                wandb.log(name, body)

    def _export(self) -> None:
        for bi, bank in enumerate(self.banks):
            for i, m in enumerate(self.members[bi]):
                if m.name in self.owned:
                    save_sae(self.out / m.name, self._export_one(bank, i), self._cfg(m))
        self.dist.barrier()  # every checkpoint exists before anyone reads the run

    def _keep_best(self, records: list[dict[str, Any]]) -> None:
        """Export every owned SAE whose validation FVU is its lowest so far to ``<sae>/best/``
        (inference state as it is now: BatchTopK's running threshold, as validation measured)."""
        where = {m.name: (bi, i) for bi, ms in enumerate(self.members) for i, m in enumerate(ms)}
        for rec in records:
            name, v = rec["sae"], rec.get("val_fvu")
            if v is None or name not in self.owned or v >= self.best_val.get(name, float("inf")):
                continue
            self.best_val[name] = v
            bi, i = where[name]
            m = self.members[bi][i]
            cfg = self._cfg(m)
            cfg.metrics = {k: val for k, val in rec.items() if k not in ("sae", "samples_per_s")}
            cfg.best = {"step": rec["step"], "val_fvu": v}
            save_sae(self.out / m.name / "best", self._export_one(self.banks[bi], i), cfg)

    def _export_one(self, bank: Bank, i: int) -> dict[str, torch.Tensor]:
        """SAE ``i`` of ``bank`` with the normalisation folded in (a transcoder's two scales)."""
        if self.scale_out is None:
            return bank.export(i, self.scale)
        return bank.export(i, self.scale, scale_out=self.scale_out)

    def _cfg(self, m: SAEConfig) -> SAECheckpointConfig:
        """The checkpoint's cfg.json for SAE ``m`` as trained so far."""
        from sae_core.checkpoint.cfg import Normalization, SourceInfo, TrainInfo, ValInfo
        from sae_core.plugins import get_component

        meta = self.reader.meta
        split = self.data.split()
        return SAECheckpointConfig(
            name=m.name,
            architecture=m.arch,
            d_in=self.d_in,
            d_sae=m.d_sae,
            d_out=None if self.layer_out is None else meta.d_model,
            hyper=m.hyper,
            non_negative_codes=bool(get_component("architecture", m.arch).factory.non_negative_codes),
            normalization=Normalization(folded=True, scale=self.scale, scale_out=self.scale_out),
            source=SourceInfo(
                cache=str(Path(self.cfg.cache).resolve()) if self.cfg.cache else None,  # live, no --also-cache
                cache_fingerprint=meta.fingerprint(),
                adapter=meta.adapter,
                model=meta.model,
                layer=meta.layers[self.layer],
                layer_index=self.layer,
                layer_out=None if self.layer_out is None else meta.layers[self.layer_out],
                layer_out_index=self.layer_out,
                tokens=self.data.tokens,
                d_model=meta.d_model,
                dataset=meta.dataset.get("spec"),
            ),
            train=TrainInfo(
                lr=m.lr,
                steps=self.cfg.train.steps,
                batch_size=self.data.batch_size,
                seed=self.cfg.train.seed,
                lr_warmup_steps=self.warmup,
                lr_decay_frac=self.cfg.train.lr_decay_frac,
                sparsity_warmup_steps=self.sparsity_warmup,
                normalize=self.data.normalize,
                world_size=self.dist.world,
                parallel=self.cfg.train.parallel if self.dist.active else None,
            ),
            # examples held out of training (analyses read them by default)
            val=ValInfo(fraction=split.fraction, seed=split.seed, tokens=self.val.n_tokens),
            # fvu/l0: inference mode on the batches after the last step; val_*: on the
            # validation tokens (see _finalize)
            metrics={k: v for k, v in self.last_metrics.get(m.name, {}).items() if k != "samples_per_s"},
        )

def run_training(
    config: TrainConfig, *, progress: bool = True, resume: bool = False, stop_after: int | None = None,
    dist: Dist | None = None, overwrite: bool = False, allow_incomplete: bool = False, source: Any = None,
) -> Path:
    """Train every SAE of ``config``; returns the run directory ``config.out``.

    ``resume=True`` continues from the last saved state of each group; otherwise a run already
    in ``config.out`` is an error unless ``overwrite=True`` deletes it first. ``stop_after``
    stops after that many steps of this call (state saved), for time-boxed jobs and resume tests.
    ``allow_incomplete``: train on a cache whose writing was interrupted. ``dist``: this
    process's place in a ``torchrun`` job (see :mod:`sae_core.dist`); None is one process.
    The run directory is locked for the whole call (:mod:`sae_core.lock`), and SIGINT/SIGTERM
    stop it at a step boundary with its state saved (:mod:`sae_core.train.signals`).
    ``config.live`` trains on a running model (:mod:`sae_core.train.live`) instead of a cache;
    ``source``: that live source already opened (it is closed at the end).
    """
    from sae_core.stores import check_complete, open_reader
    from sae_core.validate import check_device, check_output_dir

    dist = dist or Dist()
    out = Path(config.out)
    check_device(dist.device(config.train.device))
    check_output_dir(out)
    if dist.device(config.train.device) == "cpu":
        from sae_core.train.host_alloc import keep_freed_host_memory

        keep_freed_host_memory()  # a bank's large tensors are reused, not page-faulted in every step
    if config.train.e2e and config.live is None:
        raise ConfigError("--e2e trains through the running model: it needs live training (--adapter, --model)")
    if config.train.e2e and any(sae.data.transcoder for sae in config.saes):
        raise ConfigError("--e2e splices an SAE's reconstruction of its own layer; transcoders (--layer-out) cannot "
                          "be trained end to end yet: drop --e2e or --layer-out")
    if config.live is not None:
        reader = open_live(config, dist, progress=progress) if source is None else source.configure(config)
        if reader.cache_path is not None:  # --also-cache: checkpoints and analyses refer to it
            config.cache = str(reader.cache_path)
    else:
        reader = open_reader(config.cache)
        check_complete(reader, allow_incomplete=allow_incomplete)
    with contextlib.ExitStack() as held:
        if config.live is not None:
            held.callback(reader.close)
        return _run_training(config, reader, out, dist, progress=progress, resume=resume, stop_after=stop_after,
                             overwrite=overwrite)


def open_live(config: TrainConfig, dist: Dist | None = None, progress: bool = False) -> Any:
    """The live source of ``config`` (model loaded, also-cache opened)."""
    from sae_core.train.live.source import LiveSource

    assert config.live is not None
    return LiveSource(config.live, device=config.train.device, dist=dist, progress=progress).configure(config)


def _run_training(config: TrainConfig, reader: Any, out: Path, dist: Dist, *, progress: bool, resume: bool,
                  stop_after: int | None, overwrite: bool) -> Path:
    from sae_core.lock import DirLock
    from sae_core.train.rundir import check_same_cache, prepare_new_run, read_config_doc, write_config

    for sae in config.saes:
        reader.layer_index(sae.data.layer)
        if sae.data.transcoder:
            if reader.layer_index(sae.data.layer_out) == reader.layer_index(sae.data.layer):
                raise ConfigError(f"layer_out {sae.data.layer_out!r} is the input layer {sae.data.layer!r} itself: that "
                                  "is an SAE; drop --layer-out, or name the layer the transcoder should predict")
            from sae_core.plugins import get_component

            get_component("architecture", sae.arch).factory.check_transcoder()
        reader.positions(sae.data.tokens)
        if dist.active and sae.data.batch_size % dist.world:
            raise ConfigError(
                f"batch size {sae.data.batch_size} does not split evenly over {dist.world} ranks; "
                f"use a multiple of {dist.world}"
            )
    with contextlib.ExitStack() as held:
        lock = DirLock(out, "run directory", hint=", or pass another --out")
        held.enter_context(lock.collective(dist))
        if resume:
            check_same_cache(read_config_doc(out), reader, out)
        elif dist.is_main:
            prepare_new_run(out, overwrite=overwrite)
        dist.barrier()  # everyone has checked the old config.json before rank 0 rewrites it
        if dist.is_main:
            write_config(out, config, reader)
        wandb = _wandb(config, out, resume) if config.train.wandb and dist.is_main else None
        if wandb is not None:
            held.callback(wandb.finish_all)  # runs of a group that did not finish: closed as failed
        stop = held.enter_context(StopRequest())
        groups = config.groups()
        for gi, (data, saes) in enumerate(groups.items()):
            trainer = GroupTrainer(config, reader, data, saes, out, gi, dist)
            trainer.stop = stop
            finished = all(is_checkpoint(out / m.name) for m in saes)
            if resume and finished and trainer.load() and trainer.step >= config.train.steps:
                continue  # this group finished before the interruption
            if wandb is not None:
                wandb.start(saes)
            try:
                trainer.run(resume=resume, progress=progress, stop_after=stop_after, wandb=wandb)
            except StopTraining:
                if wandb is not None:
                    wandb.finish(saes, completed=False)
                return out
            if wandb is not None:
                wandb.finish(saes, completed=True)
        if dist.is_main:
            _write_sweep(out, config, reader)
    return out


def _wandb(config: TrainConfig, out: Path, resume: bool) -> Any:
    """One W&B run per SAE (:mod:`sae_core.train.wandb_log`)."""
    from sae_core.train.wandb_log import WandbRuns

    return WandbRuns(config, out, resume=resume)


def _write_sweep(out: Path, config: TrainConfig, reader: Any) -> None:
    from sae_core.io import atomic_write_json
    from sae_core.train.rundir import cache_record

    saes = []
    for sae in config.saes:
        cfg = read_cfg(out / sae.name)
        saes.append({
            "name": sae.name,
            "path": sae.name,
            "architecture": sae.arch,
            "d_sae": sae.d_sae,
            "hyper": sae.hyper,
            "lr": sae.lr,
            "layer": cfg.source.layer,
            **({"layer_out": cfg.source.layer_out} if cfg.source.layer_out is not None else {}),
            "tokens": sae.data.tokens,
            "batch_size": sae.data.batch_size,
            "final": cfg.metrics,
        })
    atomic_write_json(out / SWEEP_FILE, {**cache_record(config.cache, out, reader), "steps": config.train.steps,
                                         "saes": saes})
