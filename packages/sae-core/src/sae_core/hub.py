"""Share SAEs on the Hugging Face Hub: ``sae upload`` / ``sae download``.

A repo holds one folder per SAE (its checkpoint directory: cfg.json, sae.safetensors, metrics and
analysis files), ``sweep.json`` for a run, and a generated model card (``README.md``) whose YAML
front matter sets ``library_name: sae`` so the Hub shows the library. The token comes from
huggingface_hub's usual places (``HF_TOKEN``, ``hf auth login``); sae never writes it anywhere.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sae_core.checkpoint.cfg import SAECheckpointConfig, read_cfg
from sae_core.checkpoint.discovery import find_checkpoints, is_checkpoint
from sae_core.checkpoint.filenames import CFG_FILE, RUN_CONFIG_FILE, SWEEP_FILE
from sae_core.errors import SAEError, os_error_message
from sae_core.interop.detect import sniff_format
from sae_core.io import atomic_write_text
from sae_core.validate import check_output_dir

LIBRARY_NAME = "sae"
SKIP = {"state"}  # resumable training state stays local


def model_card(repo: str, saes: list[SAECheckpointConfig], run_config: dict[str, Any] | None) -> str:
    """README.md for the repo: front matter, a table of SAEs with final metrics, how to load."""
    archs = sorted({s.architecture for s in saes})
    models = sorted({str(s.source.model) for s in saes if s.source.model})
    lines = ["---", f"library_name: {LIBRARY_NAME}", "tags:", "- sparse-autoencoder", "- interpretability"]
    lines += [f"- {a}" for a in archs]
    if models and "/" in models[0] and not models[0].startswith(("/", "config:")):
        lines.append(f"base_model: {models[0]}")
    lines += ["---", "", f"# {repo}", "", f"{len(saes)} sparse autoencoder(s) trained with [sae](https://pypi.org/project/sae-core/)."]
    lines += ["", "| SAE | architecture | model | layer | d_in | d_sae | k | FVU | L0 | dead |",
              "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in saes:
        m, src = s.metrics, s.source
        fvu = f"{m['fvu']:.4f}" if "fvu" in m else "-"
        l0 = f"{m['l0']:.1f}" if "l0" in m else "-"
        dead = f"{m['dead_frac']:.1%}" if "dead_frac" in m else "-"
        layer = f"{src.layer} → {src.layer_out} (transcoder)" if s.is_transcoder else (src.layer or "-")
        lines.append(f"| `{s.name}` | {s.architecture} | {src.model or '-'} | {layer} | "
                     f"{s.d_in} | {s.d_sae} | {s.hyper.get('k', '-')} | {fvu} | {l0} | {dead} |")
    first = saes[0].name
    lines += ["", "## Use", "", "```bash", f"sae download {repo} --sae {first} --out saes/", "```", "",
              "```python", "from sae_core import load_sae", f"sae = load_sae('saes/{first}')",
              "latents = sae.encode(activations)  # (..., d_sae)", "```"]
    if run_config:
        lines += ["", "## Training configuration", "", "```json", json.dumps(run_config.get("train", run_config), indent=2), "```"]
    return "\n".join(lines) + "\n"


def _api(token: str | None, endpoint: str | None) -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token)


def _hub_error(e: Exception, repo: str, revision: str | None = None) -> SAEError:
    """One line naming what actually failed: the repo, the revision, the token, the network or a
    local file — never "could not reach the Hub" for something that is not the network."""
    import os

    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )


    status = getattr(getattr(e, "response", None), "status_code", None)
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if isinstance(e, HFValidationError):
        return SAEError(f"{repo!r} is not a valid Hub repo id ({first}); use user/name")
    if isinstance(e, RevisionNotFoundError):
        return SAEError(f"revision {revision!r} does not exist in Hub repo {repo!r}; pass an existing branch, tag "
                        "or commit with --revision")
    if isinstance(e, RepositoryNotFoundError) or status == 404:
        return SAEError(f"Hub repo {repo!r} not found (or it is private and you are not logged in): check the name, "
                        "or log in with `hf auth login` / set HF_TOKEN")
    if status in (401, 403):
        return SAEError(f"not allowed to access {repo!r} on the Hub (HTTP {status}): log in with `hf auth login` "
                        "or set HF_TOKEN to a token with write access")
    if isinstance(e, HfHubHTTPError):
        return SAEError(f"the Hub refused the request for {repo!r}: {first}")
    if isinstance(e, LocalEntryNotFoundError):
        offline = " (HF_HUB_OFFLINE is set: unset it to download)" if os.environ.get("HF_HUB_OFFLINE") else ""
        return SAEError(f"could not reach the Hub for {repo!r} and nothing is cached locally{offline}: {first}")
    if isinstance(e, EntryNotFoundError):
        return SAEError(f"a file was not found in Hub repo {repo!r}: {first}")
    if _is_network(e):
        return SAEError(f"could not reach the Hub for {repo!r} ({type(e).__name__}: {first}); check the network "
                        "and --endpoint / HF_ENDPOINT")
    if isinstance(e, OSError):
        message = os_error_message(e)
        where = f" {e.filename}" if e.filename else ""
        return SAEError(message or f"local file error{where} while transferring {repo!r}: {e.strerror or first}")
    return SAEError(f"the Hub transfer for {repo!r} failed: {type(e).__name__}: {first}")


def _is_network(e: BaseException) -> bool:
    """A connection or timeout error of any HTTP stack huggingface_hub may use."""
    if isinstance(e, ConnectionError | TimeoutError):
        return True
    names = {c.__name__ for c in type(e).__mro__}
    modules = {c.__module__.split(".")[0] for c in type(e).__mro__}
    return bool(modules & {"requests", "httpx", "httpx2", "urllib3", "httpcore"}) and bool(
        names & {"ConnectionError", "ConnectError", "Timeout", "TimeoutException", "NetworkError", "ProtocolError",
                 "TransportError", "ReadTimeout", "ConnectTimeout"})


def _outside_links(root: Path, dirs: list[Path]) -> list[tuple[Path, Path]]:
    """(link, target) for every symlink under ``dirs`` whose target lies outside ``root``."""
    import os

    root = root.resolve()
    found = []
    for d in dirs:
        if d.is_symlink() and not d.resolve().is_relative_to(root):
            found.append((d, d.resolve()))
            continue
        for parent, subdirs, files in os.walk(d):
            for name in subdirs + files:
                p = Path(parent) / name
                if p.is_symlink() and not p.resolve().is_relative_to(root):
                    found.append((p, p.resolve()))
    return found


def upload(path: str | Path, repo: str, *, private: bool = False, revision: str | None = None,
           token: str | None = None, endpoint: str | None = None, message: str | None = None) -> str:
    """Upload a run or one checkpoint to ``repo``; returns the repo URL."""

    if repo.count("/") != 1:
        raise SAEError(f"--repo must look like user/name, got {repo!r}")
    path = Path(path)
    ckpts = find_checkpoints(path)
    extra = [path / SWEEP_FILE] if (path / SWEEP_FILE).exists() else []
    leaving = _outside_links(path, ckpts + extra)
    if leaving:
        link, target = leaving[0]
        more = f" (and {len(leaving) - 1} more)" if len(leaving) > 1 else ""
        raise SAEError(f"{link} is a symlink to {target}, outside {path}{more}; sae upload never sends files from "
                       "outside the run: replace the link with a copy of the file, or remove it")
    api = _api(token, endpoint)
    cfgs = [_read_cfg(c) for c in ckpts]
    run_config = _read_json(path / RUN_CONFIG_FILE) if (path / RUN_CONFIG_FILE).is_file() else None
    with tempfile.TemporaryDirectory(prefix="sae-upload-") as tmp:
        staging = Path(tmp)
        for ckpt in ckpts:
            shutil.copytree(ckpt, staging / ckpt.name, ignore=lambda d, names: [n for n in names if n in SKIP or n.endswith(".tmp")])
        if (path / SWEEP_FILE).is_file():
            shutil.copy(path / SWEEP_FILE, staging / SWEEP_FILE)
        atomic_write_text(staging / "README.md", model_card(repo, cfgs, run_config))
        try:
            url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
            api.upload_folder(folder_path=str(staging), repo_id=repo, repo_type="model", revision=revision,
                              commit_message=message or f"Upload {len(ckpts)} SAE(s) with sae")
        except Exception as e:
            raise _hub_error(e, repo, revision) from None
    return str(url)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise SAEError(f"{path} is corrupt ({e}); fix or re-create it before uploading") from None


def _read_cfg(checkpoint: Path) -> SAECheckpointConfig:
    _read_json(checkpoint / CFG_FILE)  # a corrupt file gets this module's message
    return read_cfg(checkpoint)


def _any_checkpoint(path: Path) -> bool:
    """A checkpoint folder in any format we read (a sparsify hook folder, a dictionary_learning
    ``trainer_N``, ...): ``load_sae`` reads each as it is, ``sae import`` converts it."""

    return is_checkpoint(path) or sniff_format(path) is not None


def download(repo: str, out: str | Path, *, sae: str | None = None, revision: str | None = None,
             token: str | None = None, endpoint: str | None = None) -> Path:
    """Download ``repo`` (or one SAE folder of it) into ``out``; returns ``out``. Repos in a peer's
    format (a sparsify repo: one folder per hook) download as they are: ``load_sae`` reads
    them, ``sae import`` converts them (the CLI says so)."""
    from huggingface_hub import snapshot_download


    out = check_output_dir(out)
    patterns = [f"{sae}/*", "README.md", SWEEP_FILE] if sae else None
    try:
        snapshot_download(repo_id=repo, repo_type="model", revision=revision, local_dir=str(out),
                          allow_patterns=patterns, token=token, endpoint=endpoint)
    except Exception as e:
        raise _hub_error(e, repo, revision) from None
    if sae and not _any_checkpoint(out / sae):
        names = sorted(p.name for p in out.iterdir() if _any_checkpoint(p)) if out.is_dir() else []
        raise SAEError(f"repo {repo!r} has no SAE {sae!r}" + (f"; it has: {', '.join(names)}" if names else ""))
    return out
