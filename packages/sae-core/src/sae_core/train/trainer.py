"""The shared-batch multi-SAE trainer.

A sweep is split into *groups* by what changes the data stream (layer, token filter, batch size,
normalisation). Each group reads every batch once; within it SAEs of one architecture and shape
form a *bank* (parameters stacked on a leading ``n_saes`` dim) and every bank trains on that same
batch with batched matmuls. Different shapes form separate banks on the same batch.

Exactness: training is a pure function of (config, cache). The data position (epoch, batch in
epoch), optimizer moments, dead-latent counters and parameters are checkpointed, so
``sae train --resume`` continues bit-for-bit on CPU.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import torch

from sae_core.archs.base import Bank, TrainContext
from sae_core.checkpoint import save_sae
from sae_core.errors import CheckpointError, ConfigError, SAEError
from sae_core.train.config import DataConfig, SAEConfig, TrainConfig
from sae_core.train.init import geometric_median, norm_scale
from sae_core.train.metrics import MetricsLog, fvu
from sae_core.train.optim import BankAdam
from sae_core.train.schedule import lr_factor, sparsity_factor
from sae_core.train.state import load_state, save_state

DENSE_FREQ = 0.1  # a latent firing on more than 10% of tokens counts as dense


class StopTraining(Exception):
    """Raised internally when ``stop_after`` steps ran (time-boxed jobs, resume tests)."""


class GroupTrainer:
    """Trains every SAE of one data group on one shared stream of batches."""

    def __init__(self, config: TrainConfig, reader: Any, data: DataConfig, saes: list[SAEConfig], out: Path, gi: int):
        self.cfg, self.reader, self.data, self.saes, self.out, self.gi = config, reader, data, saes, out, gi
        s = config.train
        self.device = torch.device(s.device)
        self.layer = reader.layer_index(data.layer)
        self.d_in = reader.meta.d_model
        n_samples = reader.n_tokens(data.tokens)
        if n_samples < data.batch_size:
            raise SAEError(
                f"cache {reader.path} has {n_samples} {data.tokens!r} samples, fewer than one batch "
                f"({data.batch_size}); lower --batch-size or cache more data"
            )
        self.banks: list[Bank] = []
        self.members: list[list[SAEConfig]] = []
        by_shape: dict[tuple[str, int], list[SAEConfig]] = {}
        for sae in saes:
            by_shape.setdefault((sae.arch, sae.d_sae), []).append(sae)
        from sae_core.archs.base import make_hyper
        from sae_core.plugins import get_component

        for bi, ((arch_name, d_sae), members) in enumerate(by_shape.items()):
            arch = get_component("architecture", arch_name).factory
            hypers = [make_hyper(arch.Hyper, arch_name, m.hyper, d_sae) for m in members]
            gen = torch.Generator().manual_seed(s.seed * 1_000_003 + gi * 1009 + bi)
            self.banks.append(arch.build_bank(self.d_in, d_sae, hypers, device=self.device, generator=gen))
            self.members.append(members)
        self.opts = [
            BankAdam({k: p for k, p in b.named_parameters() if p.requires_grad}, betas=(s.adam_beta1, s.adam_beta2))
            for b in self.banks
        ]
        self.lrs = [torch.tensor([m.lr for m in ms], device=self.device) for ms in self.members]
        self.since_fired = [torch.zeros(b.n, b.d_sae, device=self.device) for b in self.banks]
        self.fired_window = [torch.zeros(b.n, b.d_sae, device=self.device) for b in self.banks]
        self.tokens_window = 0
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.scale = 1.0
        self.state_dir = out / "state" / f"group-{gi}"
        self.warmup = s.lr_warmup_steps or max(1, s.steps // 20)
        self.sparsity_warmup = s.sparsity_warmup_steps or max(1, s.steps // 20)

    # -- data -----------------------------------------------------------------------------------
    def _stream(self):
        s = self.cfg.train
        while True:
            for x in self.reader.batches(
                self.data.batch_size, layers=[self.layer], tokens=self.data.tokens, seed=s.seed,
                epoch=self.epoch, start_batch=self.batch_in_epoch, device=self.device,
            ):
                self.batch_in_epoch += 1
                yield x[:, 0] * self.scale  # (batch, d_in)
            self.epoch += 1
            self.batch_in_epoch = 0

    def _init_from_data(self) -> None:
        """Normalisation scale and geometric-median b_dec from a few batches of a side stream."""
        s = self.cfg.train
        xs = []
        for i, x in enumerate(self.reader.batches(self.data.batch_size, layers=[self.layer], tokens=self.data.tokens, seed=s.seed + 7919)):
            xs.append(x[:, 0])
            if i + 1 >= s.norm_batches:
                break
        sample = torch.cat(xs)  # (m, d_in)
        self.scale = norm_scale(sample) if self.data.normalize else 1.0
        median = geometric_median(sample[:8192] * self.scale).to(self.device)
        for bank in self.banks:
            bank.init_b_dec(median)

    # -- state ----------------------------------------------------------------------------------
    def _tensors(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for bi, (bank, opt) in enumerate(zip(self.banks, self.opts, strict=True)):
            for k, v in bank.state_dict().items():
                out[f"bank{bi}.{k}"] = v
            for k, v in opt.state_dict().items():
                out[f"opt{bi}.{k}"] = v
            out[f"since_fired{bi}"] = self.since_fired[bi]
            out[f"fired_window{bi}"] = self.fired_window[bi]
        return out

    def save(self) -> None:
        save_state(self.state_dir, self._tensors(), {
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "scale": self.scale, "tokens_window": self.tokens_window, "d_in": self.d_in,
        })

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
            bank.load_state_dict({k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"bank{bi}.")})
            opt.load_state_dict({k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"opt{bi}.")})
            self.since_fired[bi].copy_(tensors[f"since_fired{bi}"])
            self.fired_window[bi].copy_(tensors[f"fired_window{bi}"])
        self.step, self.epoch, self.batch_in_epoch = int(doc["step"]), int(doc["epoch"]), int(doc["batch_in_epoch"])
        self.scale, self.tokens_window = float(doc["scale"]), int(doc["tokens_window"])
        return True

    # -- training -------------------------------------------------------------------------------
    def run(self, *, resume: bool, progress: bool, stop_after: int | None, wandb_run: Any = None) -> None:
        s = self.cfg.train
        resumed = self.load() if resume else False
        if not resumed:
            self._init_from_data()
        logs = [
            [MetricsLog(self.out / m.name / "metrics.jsonl", resume_step=self.step if resumed else None) for m in ms]
            for ms in self.members
        ]
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else contextlib.nullcontext()
        )
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
        bar = None
        if progress:
            from tqdm.auto import tqdm

            total = s.steps * self.data.batch_size
            bar = tqdm(total=total, initial=self.step * self.data.batch_size, unit="tok", unit_scale=True,
                       desc=f"group {self.gi} ({len(self.saes)} SAEs)", dynamic_ncols=True, smoothing=0.05)
        stream = self._stream()
        ran = 0
        t_last, samples_last = time.perf_counter(), 0
        try:
            while self.step < s.steps:
                x = next(stream)
                step = self.step
                lr_f = lr_factor(step, s.steps, self.warmup, s.lr_decay_frac)
                ctx_sparsity = sparsity_factor(step, self.sparsity_warmup)
                log_now = (step + 1) % s.log_every == 0 or step + 1 == s.steps
                for bi, bank in enumerate(self.banks):
                    dead = self.since_fired[bi] >= s.dead_tokens
                    with autocast:
                        out = bank.train_forward(x, TrainContext(step=step, sparsity_scale=ctx_sparsity, dead=dead))
                    for p in bank.parameters():
                        p.grad = None
                    out.loss.sum().backward()
                    bank.project_decoder_grad()
                    self.opts[bi].step(self.lrs[bi] * lr_f)
                    bank.normalize_decoder()
                    with torch.no_grad():
                        fired = out.fired.float()
                        self.since_fired[bi].add_(x.shape[0]).masked_fill_(fired > 0, 0)
                        self.fired_window[bi].add_(fired)
                    if log_now:
                        self._log(bi, out, x, lr_f, logs[bi], samples_last, t_last, wandb_run)
                self.tokens_window += x.shape[0]
                samples_last += x.shape[0]
                self.step += 1
                ran += 1
                if bar is not None:
                    bar.update(x.shape[0])
                if log_now:
                    self.tokens_window = 0
                    for fw in self.fired_window:
                        fw.zero_()
                    t_last, samples_last = time.perf_counter(), 0
                if self.step % s.checkpoint_every == 0 and self.step < s.steps:
                    self.save()
                if stop_after is not None and ran >= stop_after and self.step < s.steps:
                    self.save()
                    raise StopTraining
        except KeyboardInterrupt:
            self.save()
            raise SAEError(f"interrupted at step {self.step}; continue with `sae train --resume {self.out}`") from None
        finally:
            if bar is not None:
                bar.close()
        self.save()
        self._export(logs)

    @torch.no_grad()
    def _log(self, bi: int, out: Any, x: torch.Tensor, lr_f: float, logs: list[MetricsLog],
             samples: int, t0: float, wandb_run: Any) -> None:
        s = self.cfg.train
        bank = self.banks[bi]
        f = fvu(x, out.recon.float())
        tokens = self.tokens_window + x.shape[0]
        freq = self.fired_window[bi] / max(tokens, 1)  # (n, d_sae)
        dead = (self.since_fired[bi] >= s.dead_tokens).float().mean(-1)
        dense = (freq > DENSE_FREQ).float().mean(-1)
        elapsed = max(time.perf_counter() - t0, 1e-9)
        for i, m in enumerate(self.members[bi]):
            rec = {
                "step": self.step + 1,
                "samples": (self.step + 1) * x.shape[0],
                "fvu": float(f[i]),
                "l0": float(out.l0[i]),
                "dead_frac": float(dead[i]),
                "dense_frac": float(dense[i]),
                "lr": float(self.lrs[bi][i]) * lr_f,
                "loss": float(out.loss[i]),
                **{k: float(v[i]) for k, v in out.terms.items()},
                "samples_per_s": (samples + x.shape[0]) / elapsed,
            }
            logs[i].write(rec)
            if wandb_run is not None:
                wandb_run.log({f"{m.name}/{k}": v for k, v in rec.items() if k != "step"}, step=rec["step"])
        del bank

    def _export(self, logs: list[list[MetricsLog]]) -> None:
        meta = self.reader.meta
        for bi, bank in enumerate(self.banks):
            for i, m in enumerate(self.members[bi]):
                cfg = {
                    "name": m.name,
                    "architecture": m.arch,
                    "d_in": self.d_in,
                    "d_sae": m.d_sae,
                    "hyper": m.hyper,
                    "normalization": {"folded": True, "scale": self.scale},
                    "source": {
                        "cache": str(Path(self.cfg.cache).resolve()),
                        "cache_fingerprint": Path(self.cfg.cache).resolve().name,
                        "adapter": meta.adapter,
                        "model": meta.model,
                        "layer": meta.layers[self.layer],
                        "layer_index": self.layer,
                        "tokens": self.data.tokens,
                        "d_model": meta.d_model,
                        "dataset": meta.dataset.get("spec"),
                    },
                    "train": {
                        "lr": m.lr,
                        "steps": self.cfg.train.steps,
                        "batch_size": self.data.batch_size,
                        "seed": self.cfg.train.seed,
                        "lr_warmup_steps": self.warmup,
                        "lr_decay_frac": self.cfg.train.lr_decay_frac,
                        "sparsity_warmup_steps": self.sparsity_warmup,
                        "normalize": self.data.normalize,
                    },
                    "metrics": {k: v for k, v in logs[bi][i].last.items() if k not in ("samples_per_s",)},
                }
                save_sae(self.out / m.name, bank.export(i, self.scale), cfg)


def run_training(
    config: TrainConfig, *, progress: bool = True, resume: bool = False, stop_after: int | None = None
) -> Path:
    """Train every SAE of ``config``; returns the run directory.

    ``resume=True`` continues from the last saved state of each group; ``stop_after`` stops after
    that many steps of this call (state saved), for time-boxed jobs and resume tests.
    """
    from sae_core.stores import open_reader

    out = Path(config.out)
    reader = open_reader(config.cache)
    for sae in config.saes:
        reader.layer_index(sae.data.layer)
        reader.positions(sae.data.tokens)
    out.mkdir(parents=True, exist_ok=True)
    if resume and not (out / "config.json").is_file():
        raise SAEError(f"{out} is not a training run (no config.json); cannot resume it")
    _write_json(out / "config.json", config.to_json())
    wandb_run = _wandb(config, out) if config.train.wandb else None
    groups = config.groups()
    for gi, (data, saes) in enumerate(groups.items()):
        trainer = GroupTrainer(config, reader, data, saes, out, gi)
        finished = all((out / m.name / "cfg.json").exists() for m in saes)
        if resume and finished and trainer.load() and trainer.step >= config.train.steps:
            continue  # this group finished before the interruption
        try:
            trainer.run(resume=resume, progress=progress, stop_after=stop_after, wandb_run=wandb_run)
        except StopTraining:
            return out
    _write_sweep(out, config)
    if wandb_run is not None:
        wandb_run.finish()
    return out


def _wandb(config: TrainConfig, out: Path) -> Any:
    try:
        import wandb
    except ImportError:
        raise ConfigError("--wandb needs the wandb package: pip install 'sae-core[wandb]'") from None
    return wandb.init(project=config.train.wandb_project, name=out.name, config=config.to_json(), dir=str(out))


def _write_json(path: Path, doc: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    tmp.replace(path)


def _write_sweep(out: Path, config: TrainConfig) -> None:
    saes = []
    for sae in config.saes:
        cfg = json.loads((out / sae.name / "cfg.json").read_text())
        saes.append({
            "name": sae.name,
            "path": sae.name,
            "architecture": sae.arch,
            "d_sae": sae.d_sae,
            "hyper": sae.hyper,
            "lr": sae.lr,
            "layer": cfg["source"]["layer"],
            "tokens": sae.data.tokens,
            "batch_size": sae.data.batch_size,
            "final": cfg["metrics"],
        })
    _write_json(out / "sweep.json", {"cache": config.cache, "steps": config.train.steps, "saes": saes})
