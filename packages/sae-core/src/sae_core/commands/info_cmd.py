"""``sae info PATH``: describe a cache, an SAE checkpoint or a training run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from sae_core.errors import SAEError


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise SAEError(f"{path} is not valid JSON ({e}); the file is corrupt, re-create it") from None


def describe(path: Path) -> dict[str, Any]:
    """A JSON-able description of whatever sae artefact lives at ``path``."""
    if not path.exists():
        raise SAEError(f"{path} does not exist; pass a cache directory, an SAE checkpoint or a run directory")
    if (path / "metadata.json").is_file():
        meta = _read_json(path / "metadata.json")
        shards = _read_json(path / "shards.json") if (path / "shards.json").is_file() else {"shards": []}
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
    if (path / "cfg.json").is_file():
        from sae_core.checkpoint import WEIGHTS, safetensors_problem
        from sae_core.errors import CheckpointError

        cfg = _read_json(path / "cfg.json")
        files = sorted(p.name for p in path.iterdir() if p.is_file())
        kind = "saelens-checkpoint" if (path / "sae_weights.safetensors").exists() else "checkpoint"
        weights = path / ("sae_weights.safetensors" if kind == "saelens-checkpoint" else WEIGHTS)
        if weights.exists() and (problem := safetensors_problem(weights)):
            raise CheckpointError(f"checkpoint {path}: {problem}; train or download that SAE again")
        return {"kind": kind, "path": str(path), "cfg": cfg, "files": files}
    if (path / "sweep.json").is_file():
        return {"kind": "run", "path": str(path), "sweep": _read_json(path / "sweep.json")}
    children = [p for p in sorted(path.iterdir()) if p.is_dir() and (p / "metadata.json").is_file()] if path.is_dir() else []
    if children:
        return {"kind": "store-root", "path": str(path), "caches": [describe(c) for c in children]}
    raise SAEError(
        f"{path} is not a cache (no metadata.json), a checkpoint (no cfg.json) or a run (no sweep.json)"
    )


def verify_cache(path: Path, progress: bool) -> dict[str, Any]:
    """Read the whole cache: shard checksums and non-finite values; an error if any is bad."""
    from sae_core.errors import StoreError
    from sae_core.stores.local.reader import LocalReader

    report = LocalReader(path).verify(progress=progress)
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
