"""A training run: open the data, check the sweep against it, lock the run directory, train each
group (:class:`~sae_core.train.group.GroupTrainer`) and write sweep.json.

Exactness: training is a pure function of (config, cache). The data position (epoch, batch in
epoch), optimizer moments, dead-latent counters and parameters are checkpointed, so
``sae train --resume`` continues bit-for-bit on CPU (:mod:`sae_core.train.bookkeeping`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from sae_core.checkpoint.discovery import is_checkpoint
from sae_core.dist import Dist
from sae_core.errors import ConfigError
from sae_core.lock import DirLock
from sae_core.stores import check_complete, open_reader
from sae_core.train.bookkeeping import StopTraining, write_sweep
from sae_core.train.config import TrainConfig
from sae_core.train.group import GroupTrainer
from sae_core.train.host_alloc import keep_freed_host_memory
from sae_core.train.live.source import LiveSource
from sae_core.train.rundir import check_same_cache, prepare_new_run, read_config_doc, write_config
from sae_core.train.signals import StopRequest
from sae_core.train.wandb_log import WandbRuns
from sae_core.validate import check_device, check_output_dir


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

    dist = dist or Dist()
    out = Path(config.out)
    check_device(dist.device(config.train.device))
    check_output_dir(out)
    if dist.device(config.train.device) == "cpu":

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

    assert config.live is not None
    return LiveSource(config.live, device=config.train.device, dist=dist, progress=progress).configure(config)


def _run_training(config: TrainConfig, reader: Any, out: Path, dist: Dist, *, progress: bool, resume: bool,
                  stop_after: int | None, overwrite: bool) -> Path:

    _check_saes(config, reader, dist)
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
        if not _train_groups(config, reader, out, dist, stop, wandb, progress=progress, resume=resume,
                             stop_after=stop_after):
            return out
        if dist.is_main:
            write_sweep(out, config, reader)
    return out


def _check_saes(config: TrainConfig, reader: Any, dist: Dist) -> None:
    """Every SAE's layers, tokens and batch size fit the data and the ranks (before the lock)."""
    for sae in config.saes:
        reader.layer_index(sae.data.layer)
        if sae.data.transcoder:
            if reader.layer_index(sae.data.layer_out) == reader.layer_index(sae.data.layer):
                raise ConfigError(f"layer_out {sae.data.layer_out!r} is the input layer {sae.data.layer!r} itself: that "
                                  "is an SAE; drop --layer-out, or name the layer the transcoder should predict")
            from sae_core.plugins import get_component  # lazy: loads pluggy

            get_component("architecture", sae.arch).factory.check_transcoder()
        reader.positions(sae.data.tokens)
        if dist.active and sae.data.batch_size % dist.world:
            raise ConfigError(
                f"batch size {sae.data.batch_size} does not split evenly over {dist.world} ranks; "
                f"use a multiple of {dist.world}"
            )


def _train_groups(config: TrainConfig, reader: Any, out: Path, dist: Dist, stop: StopRequest, wandb: Any, *,
                  progress: bool, resume: bool, stop_after: int | None) -> bool:
    """Train the groups one after the other; False if ``stop_after`` stopped the run."""
    for gi, (data, saes) in enumerate(config.groups().items()):
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
            return False
        if wandb is not None:
            wandb.finish(saes, completed=True)
    return True


def _wandb(config: TrainConfig, out: Path, resume: bool) -> Any:
    """One W&B run per SAE (:mod:`sae_core.train.wandb_log`)."""

    return WandbRuns(config, out, resume=resume)
