"""Run analyses over a checkpoint or every checkpoint of a run (``sae analyze``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sae_core.errors import SAEError


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
) -> dict[str, dict[str, Any]]:
    """Analyse every checkpoint under ``path``; returns {checkpoint name: {analysis: summary}}."""
    from sae_core.checkpoint import find_checkpoints, load_sae
    from sae_core.plugins import get_registry
    from sae_core.protocols.analysis import AnalysisContext
    from sae_core.stores import open_reader

    registry = get_registry()
    names = only or [c.name for c in registry.all("analysis") if c.attrs.get("default", True)]
    analyses = [registry.get("analysis", n).factory() for n in names]
    known = {key for c in registry.all("analysis") for key in getattr(c.factory, "options", ())}
    unknown = sorted(set(options or {}) - known)
    if unknown:
        raise SAEError(f"unknown analysis option(s) {unknown}; valid: {', '.join(sorted(known)) or 'none'}")
    out: dict[str, dict[str, Any]] = {}
    readers: dict[str, Any] = {}
    ckpts = find_checkpoints(path)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(ckpts) * len(analyses), desc="analyses", unit="analysis")
    for ckpt in ckpts:
        sae = load_sae(ckpt, device=device)
        cache = str(data or sae.cfg.get("source", {}).get("cache", ""))
        if not cache:
            raise SAEError(f"{ckpt} does not record its cache; pass --data CACHE_DIR")
        if cache not in readers:
            readers[cache] = open_reader(cache)
        reader = readers[cache]
        if reader.meta.d_model != sae.d_in:
            raise SAEError(
                f"checkpoint {ckpt} has d_in={sae.d_in} but cache {cache} has d_model={reader.meta.d_model}; "
                "pass the cache it was trained on with --data"
            )
        ctx = AnalysisContext(checkpoint=ckpt, sae=sae, reader=reader, device=device, batch_size=batch_size,
                              max_examples=max_examples, options=dict(options or {}))
        out[ckpt.name] = {}
        for analysis in analyses:
            out[ckpt.name][analysis.name] = analysis.run(ctx)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return out
