"""A training run directory: its identity is its path (``--out``), never a path recorded inside it.

``config.json`` records the cache three ways: its absolute path, its path relative to the run
directory and its fingerprint. Resuming reads the config of the directory given and re-resolves
the cache (relative first, so a run moved or copied together with its cache finds the copy; then
absolute, so a run copied alone still finds the original), and refuses a cache with another
fingerprint. Nothing in a run refers to the run's own location, so ``cp -r`` and ``mv`` of a run
give a run that resumes, analyses and uploads in place.

Starting a new run where one already is would mix two runs' files (old ``state/`` resumed under a
new ``config.json``), so it is refused unless ``--overwrite`` clears the old run first.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from sae_core.checkpoint.discovery import is_checkpoint
from sae_core.checkpoint.filenames import METRICS_FILE, RUN_CONFIG_FILE, STATE_DIR, SWEEP_FILE
from sae_core.errors import ConfigError, SAEError, StoreError
from sae_core.io import atomic_write_json, fsync_dir
from sae_core.train.config import TrainConfig

CONFIG, SWEEP, STATE = RUN_CONFIG_FILE, SWEEP_FILE, STATE_DIR  # this module's former names


def run_artefacts(out: Path) -> list[Path]:
    """What of a training run ``out`` holds: its config and sweep files, its state, and SAE
    directories (with a checkpoint or a metrics log). Other files are not ours and are kept."""
    if not out.is_dir():
        return []
    found = [out / n for n in (CONFIG, SWEEP, STATE) if (out / n).exists()]
    found += sorted(p for p in out.iterdir() if p.is_dir() and p.name != STATE
                    and (is_checkpoint(p) or (p / METRICS_FILE).exists()))
    return found


def prepare_new_run(out: Path, *, overwrite: bool) -> None:
    """Refuse to start a new run over an existing one, or (``overwrite``) delete the old one.

    ``config.json`` goes first, so a crash mid-way leaves a directory ``--resume`` refuses
    rather than one mixing the old state with a new config.
    """
    found = run_artefacts(out)
    if not found:
        return
    if not overwrite:
        names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in found[:4])
        raise SAEError(f"{out} already holds a training run ({names}); continue it with "
                       f"`sae train --resume --out {out}`, or delete it and start again with --overwrite")
    for path in sorted(found, key=lambda p: (p.name != CONFIG, p.name != STATE)):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    fsync_dir(out)


def cache_record(cache: str, out: Path, reader: Any) -> dict[str, Any]:
    """How ``config.json``/``sweep.json`` refer to the cache: absolute, relative to ``out``, and
    by fingerprint (its identity, whatever its path). A live run without ``--also-cache`` has no
    cache: its record is the fingerprint of the cache it would have written."""
    if not cache:
        return {"cache": None, "cache_fingerprint": reader.meta.fingerprint(), "d_model": reader.meta.d_model}
    p = Path(cache)
    if not p.exists():  # another store backend's address: kept as given
        return {"cache": cache}
    absolute = p.resolve()
    return {
        "cache": str(absolute),
        "cache_relative": os.path.relpath(absolute, out.resolve()),
        "cache_fingerprint": reader.meta.fingerprint(),
        "d_model": reader.meta.d_model,
    }


def write_config(out: Path, config: TrainConfig, reader: Any) -> None:
    atomic_write_json(out / CONFIG, {**config.to_json(), **cache_record(config.cache, out, reader)})


def read_config_doc(out: Path) -> dict[str, Any]:
    path = out / CONFIG
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a run directory; pass the --out of an earlier `sae train`")
    if not path.is_file():
        raise SAEError(f"{out} is not a training run (no {CONFIG}); pass the --out of an earlier `sae train`")
    try:
        doc = json.loads(path.read_text())
    except (ValueError, OSError) as e:
        raise ConfigError(f"{path} is corrupt ({' '.join(str(e).split())}); restore it from a copy of the run, "
                          "or start the run again with --overwrite") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("saes"), list) or "train" not in doc:
        raise ConfigError(f"{path} is not a run config (no saes/train); restore it from a copy of the run, "
                          "or start the run again with --overwrite")
    return doc


def load_config(out: Path, data: str | Path | None = None) -> tuple[TrainConfig, dict[str, Any]]:
    """The config of run ``out`` with ``out`` as its directory and its cache re-resolved (or
    ``data`` when given); also the raw document (for the recorded fingerprint)."""
    doc = read_config_doc(out)
    try:
        config = TrainConfig.from_json(doc)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{out / CONFIG} is damaged ({type(e).__name__}: {e}); restore it from a copy of the "
                          "run, or start the run again with --overwrite") from None
    config.out = str(out)
    if config.live is not None:  # the model is the source; the also-cache (if any) is found again or rewritten
        try:
            config.cache = resolve_cache(doc, out, f"run {out}") if doc.get("cache") else ""
        except StoreError:
            config.cache = ""
        return config, doc
    config.cache = str(data) if data is not None else resolve_cache(doc, out, f"run {out}")
    return config, doc


def resolve_cache(record: dict[str, Any], base: Path, what: str) -> str:
    """The cache a run or checkpoint ``record`` refers to: ``cache_relative`` (to ``base``) if it
    exists there, else ``cache`` as recorded; an error naming both and ``--data`` otherwise."""
    recorded = str(record.get("cache") or "")
    candidates = []
    if record.get("cache_relative"):
        candidates.append(base / record["cache_relative"])
    if recorded:
        candidates.append(Path(recorded))
    for c in candidates:
        if c.exists():
            return str(c)
    if not recorded:
        raise StoreError(f"{what} does not record its cache (trained live without --also-cache?); pass --data "
                         "CACHE_DIR, e.g. the `sae cache` of the same model, layers and dataset")
    fp = f" (fingerprint {record['cache_fingerprint']})" if record.get("cache_fingerprint") else ""
    raise StoreError(f"{what} was trained on cache {recorded}{fp}, which no longer exists there (moved or "
                     "deleted); point at it with --data CACHE_DIR")


def check_same_cache(doc: dict[str, Any], reader: Any, out: Path) -> None:
    """Resuming on another cache would silently train on other data: refuse it."""
    fp, d = doc.get("cache_fingerprint"), doc.get("d_model")
    mine, my_d = reader.meta.fingerprint(), reader.meta.d_model
    if d is not None and int(d) != my_d:
        raise SAEError(f"run {out} was trained on d_model={d} (cache {fp}), but cache {reader.path} has "
                       f"d_model={my_d}; resume with the cache it was trained on (omit --data or pass its path)")
    if fp is not None and fp != mine:
        raise SAEError(f"run {out} was trained on cache {fp}, but {reader.path} is another cache ({mine}); "
                       "resume with the cache it was trained on (omit --data or pass its path)")
