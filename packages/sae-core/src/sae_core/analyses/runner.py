"""Run analyses over a checkpoint or every checkpoint of a run (``sae analyze``)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sae_core import filenames
from sae_core.checkpoint.directory import load_sae
from sae_core.checkpoint.discovery import find_checkpoints
from sae_core.errors import SAEError
from sae_core.interop.detect import matching_formats
from sae_core.plugin_calls import guarded, returned
from sae_core.protocols.analysis import AnalysisContext, PassAnalysis
from sae_core.stores import check_complete, open_reader
from sae_core.train.rundir import resolve_cache
from sae_core.validate import check_device

if TYPE_CHECKING:
    from sae_core.checkpoint.cfg import SAECheckpointConfig


def analyse_run(
    path: str | Path,
    *,
    data: str | Path | None = None,
    only: list[str] | None = None,
    device: str = "cpu",
    batch_size: int = 4096,
    max_examples: int | None = None,
    options: dict[str, Any] | None = None,
    progress: bool = True,
    allow_incomplete: bool = False,
) -> dict[str, dict[str, Any]]:
    """Analyse every checkpoint under ``path``; returns {checkpoint name: {analysis: summary}}.

    Each checkpoint's cache is ``data`` or the one it records (re-resolved like a resumed run's,
    see :mod:`sae_core.train.rundir`); an incomplete cache is refused unless ``allow_incomplete``.
    Results go beside each checkpoint, so every checkpoint directory must be writable (checked
    before any analysis runs).
    """

    check_device(device)
    analyses = _analyses(only, options)
    ckpts = find_checkpoints(path)
    for ckpt in ckpts:
        _refuse_foreign(ckpt)
        if not os.access(ckpt, os.W_OK | os.X_OK):
            raise SAEError(f"cannot write analysis results into {ckpt} (read-only or no permission); copy the run "
                           "to a writable place and analyse the copy")
    contexts = _contexts(ckpts, data=data, device=device, batch_size=batch_size, max_examples=max_examples,
                         options=options, allow_incomplete=allow_incomplete)
    return _run_analyses(contexts, analyses, progress=progress)


def _analyses(only: list[str] | None, options: dict[str, Any] | None) -> list[Any]:
    """The analyses to run, each after those it requires (``only``, else every analysis that is
    on by default); an ``--option`` no installed analysis reads is refused (a typo, not ignored)."""
    from sae_core.plugins import get_registry  # lazy: loads pluggy

    registry = get_registry()
    names = _with_requirements(registry, only or [c.name for c in registry.all("analysis") if c.attrs.get("default", True)])
    analyses = [registry.get("analysis", n).factory() for n in names]
    known = {key for c in registry.all("analysis") for key in getattr(c.factory, "options", ())}
    unknown = sorted(set(options or {}) - known)
    if unknown:
        raise SAEError(f"unknown analysis option(s) {unknown}; valid: {', '.join(sorted(known)) or 'none'}")
    return analyses


def _contexts(ckpts: list[Path], *, data: str | Path | None, device: str, batch_size: int, max_examples: int | None,
              options: dict[str, Any] | None, allow_incomplete: bool) -> list[Any]:
    """One :class:`AnalysisContext` per checkpoint: its SAE and a reader of its cache (one reader
    per cache, shared by the checkpoints trained on it), checked to hold the SAE's input width."""

    readers: dict[str, Any] = {}
    contexts = []
    for ckpt in ckpts:
        sae = load_sae(ckpt, device=device)
        cache = str(data) if data is not None else _recorded_cache(ckpt, sae.cfg)
        if cache not in readers:
            readers[cache] = open_reader(cache)
            check_complete(readers[cache], allow_incomplete=allow_incomplete)
        reader = readers[cache]
        if reader.meta.d_model != sae.d_in:
            raise SAEError(
                f"checkpoint {ckpt} has d_in={sae.d_in} but cache {cache} has d_model={reader.meta.d_model}; "
                "pass the cache it was trained on with --data"
            )
        contexts.append(AnalysisContext(checkpoint=ckpt, sae=sae, reader=reader, device=device, batch_size=batch_size,
                                        max_examples=max_examples, options=dict(options or {})))
    return contexts


def _run_analyses(contexts: list[Any], analyses: list[Any], *, progress: bool) -> dict[str, dict[str, Any]]:
    """Run every analysis on every context: the pass analyses together in one shared read of each
    cache, then the others one by one; {checkpoint name: {analysis: summary}}."""
    from sae_core.analyses.shared_pass import run_shared_pass  # lazy: loads torch, numpy

    shared = [a for a in analyses if isinstance(a, PassAnalysis)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(contexts) * len(analyses), desc="analyses", unit="analysis")
    # one read of each cache for every SAE and every pass analysis (statistics, examples, database)
    passed = run_shared_pass([(ctx, shared) for ctx in contexts])
    if bar is not None:
        bar.update(len(contexts) * len(shared))
    _warn_if_few_tokens(passed)
    out: dict[str, dict[str, Any]] = {}
    for ctx in contexts:
        out[ctx.checkpoint.name] = {}
        for analysis in analyses:
            if isinstance(analysis, PassAnalysis):
                out[ctx.checkpoint.name][analysis.name] = passed[ctx.checkpoint][analysis.name]
                continue
            out[ctx.checkpoint.name][analysis.name] = _run_one(analysis, ctx)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return out


def _run_one(analysis: Any, ctx: Any) -> dict[str, Any]:
    """``analysis.run(ctx)``, guarded: a plugin analysis's bug or a summary that is not a dict is
    one line naming it."""

    expected = "a JSON-able dict (the summary sae analyze prints)"
    with guarded("analysis", analysis.name, "run(ctx)", expected):
        summary = analysis.run(ctx)
    return returned(summary, dict, "analysis", analysis.name, "run(ctx)", expected)


def _refuse_foreign(ckpt: Path) -> None:
    """Results are written beside the checkpoint, so never into another tool's directory (a
    SAELens export, a downloaded checkpoint of another format): those are converted first.
    Ours is what :func:`sae_core.interop.detect.matching_formats` finds to be ours alone."""

    found = matching_formats(ckpt)
    if found and found != ["sae"]:  # nothing found: load_sae gives the precise one-line error
        raise SAEError(f"{ckpt} is a checkpoint written by another tool; sae analyze writes its results beside "
                       f"the checkpoint and never into another tool's directory: convert it first with "
                       f"`sae import {ckpt} --out DIR` and analyse DIR")


def _with_requirements(registry: Any, names: list[str]) -> list[str]:
    """``names`` with the analyses they require (``Analysis.requires``) added before them."""
    out: list[str] = []

    def add(name: str) -> None:
        if name in out:
            return
        for req in getattr(registry.get("analysis", name).factory, "requires", ()):
            add(req)
        out.append(name)

    for name in names:
        add(name)
    return out


def _warn_if_few_tokens(passed: dict[Path, dict[str, Any]]) -> None:
    """One line on stderr when the descriptive analyses of some SAE read fewer than FEW_TOKENS tokens."""
    import sys

    from sae_core.analyses.common import FEW_TOKENS  # lazy: loads torch, numpy

    counts = {ckpt.name: s["n_tokens"] for ckpt, per in passed.items() for s in per.values()
              if isinstance(s, dict) and isinstance(s.get("n_tokens"), int)}
    few = {name: n for name, n in counts.items() if n < FEW_TOKENS}
    if few:
        name, n = min(few.items(), key=lambda kv: kv[1])
        print(f"warning: feature statistics and examples of {len(few)} SAE(s) rest on fewer than {FEW_TOKENS:,} "
              f"tokens (fewest: {n:,} for {name}); rare latents look dead: cache more data (or read more of it: "
              "--option split=all, a larger --option max_tokens=)", file=sys.stderr)


def _recorded_cache(ckpt: Path, cfg: SAECheckpointConfig) -> str:
    """The cache a checkpoint was trained on: through its run's ``config.json`` (relative to the
    run, so a moved run with its cache works), else the absolute path in ``cfg.json``."""
    import json


    source = cfg.source
    run_cfg = ckpt.parent / filenames.RUN_CONFIG_FILE
    if run_cfg.is_file():
        try:
            doc = json.loads(run_cfg.read_text())
        except ValueError:
            doc = {}
        if isinstance(doc, dict) and doc.get("cache_fingerprint") == source.cache_fingerprint:
            with contextlib.suppress(SAEError):
                return resolve_cache(doc, ckpt.parent, f"SAE {ckpt}")
    record = {"cache": source.cache, "cache_fingerprint": source.cache_fingerprint}
    return resolve_cache(record, ckpt, f"SAE {ckpt}")
