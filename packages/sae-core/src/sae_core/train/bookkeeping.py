"""A group's bookkeeping around its training steps: metric records, validation bests, resumable
state, stopping, the exported checkpoints, and the run's sweep.json.

:class:`GroupBookkeeping` is the half of :class:`~sae_core.train.group.GroupTrainer` that writes
things down; the other half (:mod:`sae_core.train.group`) builds the banks and steps them. The
attributes it reads are declared below and set by ``GroupTrainer.__init__``.

Exactness: the state saved here (parameters, optimizer moments, dead-latent counters, the data
position and, for a live source, its stream position) is everything a step reads, so
``sae train --resume`` continues bit for bit on CPU. Tensors are saved per SAE
(``<sae name>/<tensor>``, :mod:`sae_core.train.state`), so any split into banks or ranks loads them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sae_core.checkpoint.cfg import (
    Normalization,
    SAECheckpointConfig,
    SourceInfo,
    TrainInfo,
    ValInfo,
    read_cfg,
)
from sae_core.checkpoint.directory import save_sae
from sae_core.checkpoint.filenames import METRICS_FILE, SWEEP_FILE
from sae_core.dist import Dist
from sae_core.errors import CheckpointError, RunInterrupted
from sae_core.io import atomic_write_json
from sae_core.protocols.architecture import Bank, BatchComm
from sae_core.train.checks import NonFiniteWatch, nonfinite_error
from sae_core.train.config import DataConfig, SAEConfig, TrainConfig
from sae_core.train.metrics import MetricsLog, fvu_from_sums
from sae_core.train.optim import BankAdam
from sae_core.train.rundir import cache_record
from sae_core.train.state import commit, load_state, save_tensors, tensors_name
from sae_core.train.validation import Validation
from sae_core.validation_split import Selection

if TYPE_CHECKING:
    from sae_core.train.group import Loop, StepPlan

DENSE_FREQ = 0.1  # a latent firing on more than 10% of tokens counts as dense


class StopTraining(Exception):
    """Raised internally when ``stop_after`` steps ran (time-boxed jobs, resume tests)."""


class GroupBookkeeping:
    """Records, state, stopping and export of one group's SAEs (mixed into GroupTrainer)."""

    cfg: TrainConfig
    reader: Any
    data: DataConfig
    saes: list[SAEConfig]
    out: Path
    dist: Dist
    device: torch.device
    layer: int
    layer_out: int | None
    d_in: int
    scale: float
    scale_out: float | None
    banks: list[Bank]
    members: list[list[SAEConfig]]
    opts: list[BankAdam]
    lrs: list[torch.Tensor]
    since_fired: list[torch.Tensor]  # (n, d_sae) per bank: training tokens since each latent fired
    fired_window: list[torch.Tensor]  # (n, d_sae) per bank: firings since the last log step
    comm: BatchComm
    val: Validation
    shard_saes: bool
    owned: set[str]
    writer_ranks: list[int]
    state_dir: Path
    step: int
    epoch: int
    batch_in_epoch: int
    tokens_window: int
    dead_window: int
    warmup: int
    sparsity_warmup: int
    best_val: dict[str, float]
    last_metrics: dict[str, dict[str, Any]]
    saved_step: int | None
    logs: dict[str, MetricsLog]
    select: Selection | None
    read_layers: list[int]

    # -- after each step: log, keep the best, checkpoint, stop -----------------------------------
    def _after_step(self, loop: Loop, records: list[dict[str, Any]], plan: StepPlan, *, stop_after: int | None,
                    wandb: Any) -> None:
        """What follows step ``self.step`` (already counted): the NaN check before anything of it
        is written, its metric records, a best checkpoint, the resumable state, a planned stop."""
        s = self.cfg.train
        ckpt_now = self.step % s.checkpoint_every == 0 and self.step < s.steps
        stop_now = stop_after is not None and loop.ran >= stop_after and self.step < s.steps
        if loop.check_every_step or plan.log_now or ckpt_now or stop_now or self.step >= s.steps:
            self._check_finite(loop.watch)  # before anything of this step is written
        if plan.log_now:
            self._write_records(records, self.logs, wandb)
            if plan.eval_now and s.keep_best:
                self._keep_best(records)
            self.tokens_window = 0
            for fw in self.fired_window:
                fw.zero_()
            loop.t_last, loop.samples_last = time.perf_counter(), 0
        if ckpt_now:
            self.save()
        if stop_now:
            if self.saved_step != self.step:
                self.save()
            raise StopTraining

    def _stop_if_requested(self, loop: Loop) -> None:
        """SIGINT/SIGTERM seen (on any rank): save at this step boundary and stop, every rank at
        the same step."""
        stop, steps = loop.stop, self.cfg.train.steps
        if self.dist.any(stop.requested):
            self._check_finite(loop.watch)
            if self.saved_step != self.step:
                self.save()
            raise RunInterrupted(f"stopped by {stop.name or 'a signal'} at step {self.step} of {steps}; "
                                 f"the state is saved: continue with `sae train --resume --out {self.out}`",
                                 stop.signum or 2)

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

    def _open_logs(self, resumed: bool) -> dict[str, MetricsLog]:
        """Rank 0's metrics.jsonl of every SAE (a resumed run drops lines after its state's step)."""
        if not self.dist.is_main:
            return {}
        return {m.name: MetricsLog(self.out / m.name / METRICS_FILE, resume_step=self.step if resumed else None)
                for m in self.saes}

    # -- metric records ------------------------------------------------------------------------
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

    # -- resumable state -------------------------------------------------------------------------
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
        """Restore the group from its last committed state; False if it has none yet."""
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

    # -- checkpoints -----------------------------------------------------------------------------
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
        from sae_core.plugins import get_component  # lazy: loads pluggy

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


def write_sweep(out: Path, config: TrainConfig, reader: Any) -> None:
    """The run's sweep.json: its cache, steps and every SAE with its final metrics (from cfg.json)."""

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
