"""``sae import``'s engine: checkpoints another library wrote, converted to ours.

``path`` is one peer checkpoint (a sparsify hook folder, a dictionary_learning ``trainer_N``
folder, a saev ``sae.pt``, a SAELens folder) or a folder of them (a sparsify run: one folder per
hook). Every one is read first (:func:`sae_core.interop.readers.read_any`), then all are written
into a staging directory renamed to ``out`` at the end: a damaged one writes nothing. Each
``cfg.json`` records where it came from in ``provenance`` (format, path, the peer's own config,
our version) and ``source.imported_from``.
"""

from __future__ import annotations

from pathlib import Path

from sae_core.checkpoint.filenames import CFG_FILE, WEIGHTS_FILE
from sae_core.checkpoint.weights import save_weights
from sae_core.errors import CheckpointError
from sae_core.interop.detect import FOREIGN, checkpoint_format, matching_formats, sniff_format
from sae_core.io import atomic_write_json, staged_dir


def _sources(path: Path) -> list[Path]:

    if path.exists() and matching_formats(path):
        fmt = checkpoint_format(path)  # raises when ambiguous
        if fmt == "sae":
            raise CheckpointError(f"{path} is already an sae checkpoint; use it as it is")
        return [path]
    if path.is_dir():
        kids = sorted(p for p in path.iterdir() if sniff_format(p) in FOREIGN)
        if kids:
            return kids
    checkpoint_format(path)  # raises: names every format we read
    return []


def import_checkpoints(path: str | Path, out: str | Path, *, overwrite: bool = False, layer: str | None = None,
                       model: str | None = None) -> list[Path]:
    """Convert the peer checkpoint(s) at ``path`` into ours at ``out`` (one: ``out`` itself;
    several: one subfolder each, named as the source folders). ``layer``/``model`` name what the
    SAE reads in our caches where the peer recorded another name or none (analyses look the
    layer up by name). Returns the directories written."""
    from importlib.metadata import version

    from sae_core.interop.readers import read_any  # lazy: loads torch, numpy

    path, out = Path(path), Path(out)
    sources = _sources(path)
    read = [read_any(p) for p in sources]  # every one read (and checked) before anything is written
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise CheckpointError(f"--out {out} already exists and is not empty; pass --overwrite to replace it, or another --out")
    single = len(sources) == 1 and sources[0] == path
    names = [p.stem if p.is_file() else p.name for p in sources]
    with staged_dir(out, replace=overwrite) as stage:
        for name, (_fmt, cfg, tensors) in zip(names, read, strict=True):
            cfg.name = out.name if single else name
            cfg.provenance = {**(cfg.provenance or {}), "sae_version": version("sae-core")}
            if layer is not None:
                cfg.source.layer = layer
            if model is not None:
                cfg.source.model = model
            target = stage if single else stage / name
            target.mkdir(exist_ok=True)
            save_weights(target / WEIGHTS_FILE, tensors, metadata={"format": "sae"})  # weights first, as save_sae
            atomic_write_json(target / CFG_FILE, cfg.to_json())
    return [out] if single else [out / n for n in names]
