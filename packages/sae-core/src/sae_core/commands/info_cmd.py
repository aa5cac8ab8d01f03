"""``sae info PATH``: describe a cache, an SAE checkpoint or a training run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from sae_core.checkpoint.filenames import CFG_FILE, SAELENS_WEIGHTS_FILE, SWEEP_FILE, WEIGHTS_FILE
from sae_core.checkpoint.weights import safetensors_problem
from sae_core.errors import CheckpointError, SAEError, StoreError
from sae_core.interop.detect import FORMATS, sniff_format
from sae_core.plugin_calls import guarded
from sae_core.stores import open_reader


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise SAEError(f"{path} is not valid JSON ({e}); the file is corrupt, re-create it") from None


def describe(path: Path) -> dict[str, Any]:
    """A JSON-able description of whatever sae artefact lives at ``path``."""
    if not path.exists():
        raise SAEError(f"{path} does not exist; pass a cache directory, an SAE checkpoint or a run directory")
    from sae_core.stores.local.format import METADATA  # lazy: loads numpy
    from sae_core.stores.saev import SaevStore  # lazy: loads torch, numpy

    fmt = sniff_format(path)
    if fmt in ("sparsify", "dictionary_learning", "saev"):  # another library's checkpoint (docs/interop.md)
        files = sorted(p.name for p in path.iterdir() if p.is_file()) if path.is_dir() else [path.name]
        return {"kind": f"{fmt}-checkpoint", "path": str(path), "format": FORMATS[fmt], "files": files,
                "convert": f"sae import {path} --out DIR"}
    if SaevStore().detect(path):  # saev's activation shards, read in place
        return {"kind": "saev-cache", "path": str(path), "metadata": _read_json(path / METADATA),
                "shards": len(list(path.glob("acts*.bin")))}
    if (path / METADATA).is_file() and _is_local_cache(meta := _read_json(path / METADATA)):  # the local store's layout
        return _describe_local_cache(path, meta)
    if (path / CFG_FILE).is_file():
        return _describe_checkpoint(path)
    if (path / SWEEP_FILE).is_file():
        return {"kind": "run", "path": str(path), "sweep": _read_json(path / SWEEP_FILE)}
    other = _other_store_cache(path)
    if other is not None:
        return other
    children = [p for p in sorted(path.iterdir()) if p.is_dir() and (p / METADATA).is_file()] if path.is_dir() else []
    if children:
        return {"kind": "store-root", "path": str(path), "caches": [describe(c) for c in children]}
    if (path / METADATA).is_file():
        raise SAEError(f"{path} has a {METADATA} but is not an activation cache this toolkit reads (no adapter, model, "
                       "layers, d_model in it); caches are made by `sae cache`")
    raise SAEError(
        f"{path} is not a cache (no metadata.json), a checkpoint (no {CFG_FILE}) or a run (no {SWEEP_FILE})"
    )


def _describe_local_cache(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """A cache of the local store: its metadata, shards written and their bytes."""
    from sae_core.stores.local.format import SHARDS  # lazy: loads numpy

    shards = _read_json(path / SHARDS) if (path / SHARDS).is_file() else {"shards": []}
    shard_list = shards.get("shards", [])
    n_written = sum(int(s.get("n_examples", 0)) for s in shard_list)
    size = sum((path / s["file"]).stat().st_size for s in shard_list if (path / s["file"]).exists())
    return {
        "kind": "cache",
        "path": str(path),
        "metadata": meta,
        "shards": len(shard_list),
        "examples_written": n_written,
        "bytes": size,
    }


def _describe_checkpoint(path: Path) -> dict[str, Any]:
    """A directory with a cfg.json: our checkpoint or SAELens's (an error if it is neither, or if
    its weights file is damaged)."""

    cfg = _read_json(path / CFG_FILE)
    files = sorted(p.name for p in path.iterdir() if p.is_file())
    kind = "saelens-checkpoint" if (path / SAELENS_WEIGHTS_FILE).exists() else "checkpoint"
    missing = [k for k in ("architecture", "d_in", "d_sae") if not isinstance(cfg, dict) or k not in cfg]
    if missing and kind == "checkpoint":
        raise CheckpointError(f"{path} has a {CFG_FILE} but is not an SAE checkpoint this toolkit reads (it lacks "
                              f"{', '.join(missing)}); `sae import` converts other tools' checkpoints")
    weights = path / (SAELENS_WEIGHTS_FILE if kind == "saelens-checkpoint" else WEIGHTS_FILE)
    if weights.exists() and (problem := safetensors_problem(weights)):
        raise CheckpointError(f"checkpoint {path}: {problem}; train or download that SAE again")
    doc = {"kind": kind, "path": str(path), "cfg": cfg, "files": files}
    if isinstance(cfg, dict) and _is_transcoder(cfg):
        source, meta = cfg.get("source") or {}, cfg.get("metadata") or {}
        doc["transcoder"] = {  # encodes `input`, reconstructs `output`
            "input": source.get("layer", meta.get("hook_name")),
            "output": source.get("layer_out", meta.get("hook_name_out")),
            "d_in": cfg.get("d_in"), "d_out": cfg.get("d_out"),
        }
    return doc


def _is_local_cache(meta: Any) -> bool:
    """Whether a metadata.json is our local store's (another tool's cache may use the same name)."""
    return isinstance(meta, dict) and all(k in meta for k in ("adapter", "model", "layers", "d_model"))


def _is_transcoder(cfg: dict[str, Any]) -> bool:
    """A transcoder's cfg.json: ours records d_out; SAELens names a transcoder architecture."""
    return cfg.get("d_out") is not None if cfg.get("format") == "sae" else "transcoder" in str(cfg.get("architecture", ""))


def _other_store_cache(path: Path) -> dict[str, Any] | None:
    """A cache of a store other than ``local`` (a plugin's), described through its reader."""
    import dataclasses

    from sae_core.plugins import get_registry  # lazy: loads pluggy

    for component in get_registry().all("store"):
        if component.name == "local":
            continue
        with guarded("store", component.name, "detect(path)", "True or False: is this path one of its caches"):
            found = component.build().detect(path)
        if found:
            reader = open_reader(path, store=component.name)  # guarded: a plugin's bad reader is one line
            return {"kind": "cache", "store": component.name, "path": str(path),
                    "metadata": dataclasses.asdict(reader.meta), "examples_written": reader.n_examples}
    return None


def verify_cache(path: Path, progress: bool) -> dict[str, Any]:
    """Read the whole cache: shard checksums and non-finite values; an error if any is bad."""

    report = open_reader(path).verify(progress=progress)
    problems = []
    if report["damaged"]:
        problems.append(f"{len(report['damaged'])} file(s) do not match their checksum ({', '.join(report['damaged'][:3])})")
    if report["nonfinite"]:
        shards = list(report["nonfinite"])
        problems.append(f"{sum(report['nonfinite'].values())} non-finite value(s) in shard(s) {', '.join(shards[:3])}")
    if problems:
        raise StoreError(f"cache {path} failed verification: {'; '.join(problems)}; delete it and run the same "
                         "`sae cache` command again")
    return report


def info(
    path: Annotated[Path, typer.Argument(help="A cache directory, SAE checkpoint, or run directory.")],
    verify: Annotated[
        bool, typer.Option("--verify", help="Caches: read every shard, check its sha256 and look for NaN/Inf.")
    ] = False,
) -> None:
    """Describe a cache, a checkpoint or a run as JSON."""
    doc = describe(path)
    if verify:
        if doc["kind"] != "cache":
            raise SAEError(f"--verify checks caches; {path} is a {doc['kind']}")
        doc["verified"] = verify_cache(path, progress=False)
    typer.echo(json.dumps(doc, indent=2, default=str))


def register(app: typer.Typer) -> None:
    app.command("info")(info)
