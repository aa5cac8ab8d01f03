"""Non-finite training, caught cheaply and reported with where the bad data came from.

Checking every input for NaN/Inf would cost a full pass over each batch. The per-SAE loss is
already a reduced tensor and any non-finite input makes it non-finite, so each step only ORs
``~isfinite(loss)`` into a flag on the device (no host sync). The flag is read at *check points*:
every step on a single CPU process (where reading it costs nothing), otherwise at log steps,
before every save and at the end — so a non-finite state is never saved. Only when the flag is
set is the offending step's batch read again (the data order is a pure function of seed, epoch
and batch) to tell bad inputs, located by shard and example, from a diverged SAE.
"""

from __future__ import annotations

from typing import Any

import torch

from sae_core.errors import SAEError
from sae_core.protocols.batch_plan import BatchPlan


class NonFiniteError(SAEError):
    """Training met NaN/Inf inputs or losses; nothing was saved past the last good state."""


class NonFiniteWatch:
    """Device-side record of the first step whose loss was non-finite, and of which SAEs."""

    def __init__(self, bank_sizes: list[int], device: torch.device) -> None:
        self.first_step = torch.full((), -1, dtype=torch.long, device=device)
        self.bad = [torch.zeros(n, dtype=torch.bool, device=device) for n in bank_sizes]
        #: step -> (epoch, batch in epoch) of its batch, for the steps since the last check
        self.positions: dict[int, tuple[int, int]] = {}

    def note(self, step: int, epoch: int, batch: int) -> None:
        self.positions[step] = (epoch, batch)

    def update(self, bi: int, step: int, loss: torch.Tensor) -> None:
        """loss (n_saes,) of bank ``bi`` at ``step``: no host sync."""
        bad = ~torch.isfinite(loss.detach())  # (n_saes,)
        self.bad[bi] |= bad
        self.first_step = torch.where((self.first_step < 0) & bad.any(), step, self.first_step)

    def check(self, dist: Any) -> int | None:
        """The first bad step (on any rank) or None; one sync. Clears the step record when clean."""
        first = self.first_step.clone()
        if dist.active:
            dist.all_reduce_(first, "max")
        step = int(first)
        if step < 0:
            self.positions.clear()
            return None
        return step


def nonfinite_error(watch: NonFiniteWatch, step: int, *, reader: Any, layer: int | list[int], tokens: str, batch_size: int,
                    seed: int, names: list[list[str]], lrs: list[list[float]], saved_step: int | None,
                    select: Any = None) -> NonFiniteError:
    """The error for a non-finite loss at ``step``: bad inputs (with their shard and example) or
    a diverged SAE (with its learning rate)."""
    saved = (f"the last saved state (step {saved_step}) is intact" if saved_step is not None
             else "no state was saved")
    epoch, batch = watch.positions.get(step, (None, None))
    if epoch is not None:
        where = locate_nonfinite(reader, layer=layer, tokens=tokens, batch_size=batch_size, seed=seed,
                                 epoch=epoch, batch=batch, select=select)
        if where is not None:
            return NonFiniteError(
                f"cache {reader.path} holds non-finite (NaN/Inf) values, met at training step {step + 1}: {where}; "
                f"re-create the cache with `sae cache` (an fp32 --dtype avoids fp16 overflow) and check it with "
                f"`sae info --verify`; {saved}")
    bad = [(n, lr) for bi, flags in enumerate(watch.bad) for n, lr, f in
           zip(names[bi], lrs[bi], flags.tolist(), strict=True) if f]
    who = ", ".join(f"{n!r} (lr {lr:g})" for n, lr in bad) or "an SAE"
    return NonFiniteError(
        f"the loss of {who} became non-finite at training step {step + 1} although its inputs are finite: "
        f"training diverged; lower the learning rate and start again with --overwrite; {saved}")


def locate_nonfinite(reader: Any, *, layer: int | list[int], tokens: str, batch_size: int, seed: int, epoch: int,
                     batch: int, select: Any = None) -> str | None:
    """Re-read one batch of the training stream (``select``: its side of the validation split);
    describe its non-finite inputs (None if none). ``layer``: the layer read, or the layers
    (a transcoder's input and target)."""
    layers = layer if isinstance(layer, list) else [layer]
    plan = BatchPlan(batch_size, layers=layers, tokens=tokens, seed=seed, epoch=epoch, start_batch=batch, select=select)
    x = next(iter(reader.batches(plan)))  # (batch, n_layers, d)
    x = x.reshape(len(x), -1)
    bad = ~torch.isfinite(x)
    if not bool(bad.any()):
        return None
    rows = torch.nonzero(bad.any(-1)).flatten().tolist()
    what = f"{int(bad.sum())} value(s) in {len(rows)} of the {len(x)} samples of that batch"
    ids = reader.batch_sample_ids(plan, batch)
    sources = [reader.sample_source(int(ids[r])) for r in rows]
    first = sources[0]
    shards = sorted({str(s["shard"]) for s in sources if s.get("shard")})
    where = f"shard {first['shard']}" if first.get("shard") else f"cache row {first['row']}"
    listed = f"; shard(s): {', '.join(shards[:5])}{' ...' if len(shards) > 5 else ''}" if shards else ""
    return (f"{what}, first in {where} (dataset example {first['example']}, token position "
            f"{first['position']}){listed}")


def check_sample(sample: torch.Tensor, reader: Any, *, layer: int | list[int], tokens: str, batch_size: int, seed: int,
                 n_batches: int, select: Any = None) -> None:
    """The ``n_batches`` batches of the side stream ``seed`` read to initialise the SAEs
    (normalisation, b_dec) must be finite; else an error locating the first bad input."""
    if bool(torch.isfinite(sample).all()):
        return
    where = None
    for batch in range(n_batches):
        where = locate_nonfinite(reader, layer=layer, tokens=tokens, batch_size=batch_size, seed=seed, epoch=0,
                                 batch=batch, select=select)
        if where is not None:
            break
    raise NonFiniteError(
        f"cache {reader.path} holds non-finite (NaN/Inf) values, met while initialising the SAEs: "
        f"{where or 'in the first batches'}; re-create the cache with `sae cache` and check it with "
        f"`sae info --verify`")
