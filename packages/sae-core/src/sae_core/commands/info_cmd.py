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
    except json.JSONDecodeError as e:
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
        cfg = _read_json(path / "cfg.json")
        files = sorted(p.name for p in path.iterdir() if p.is_file())
        kind = "saelens-checkpoint" if (path / "sae_weights.safetensors").exists() else "checkpoint"
        return {"kind": kind, "path": str(path), "cfg": cfg, "files": files}
    if (path / "sweep.json").is_file():
        return {"kind": "run", "path": str(path), "sweep": _read_json(path / "sweep.json")}
    children = [p for p in sorted(path.iterdir()) if p.is_dir() and (p / "metadata.json").is_file()] if path.is_dir() else []
    if children:
        return {"kind": "store-root", "path": str(path), "caches": [describe(c) for c in children]}
    raise SAEError(
        f"{path} is not a cache (no metadata.json), a checkpoint (no cfg.json) or a run (no sweep.json)"
    )


def info(path: Annotated[Path, typer.Argument(help="A cache directory, SAE checkpoint, or run directory.")]) -> None:
    """Describe a cache, a checkpoint or a run as JSON."""
    typer.echo(json.dumps(describe(path), indent=2, default=str))


def register(app: typer.Typer) -> None:
    app.command("info")(info)
