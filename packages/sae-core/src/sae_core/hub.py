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

from sae_core.errors import SAEError

LIBRARY_NAME = "sae"
SKIP = {"state"}  # resumable training state stays local


def model_card(repo: str, saes: list[dict[str, Any]], run_config: dict[str, Any] | None) -> str:
    """README.md for the repo: front matter, a table of SAEs with final metrics, how to load."""
    archs = sorted({s["architecture"] for s in saes})
    models = sorted({str(s.get("source", {}).get("model")) for s in saes if s.get("source", {}).get("model")})
    lines = ["---", f"library_name: {LIBRARY_NAME}", "tags:", "- sparse-autoencoder", "- interpretability"]
    lines += [f"- {a}" for a in archs]
    if models and "/" in models[0] and not models[0].startswith(("/", "config:")):
        lines.append(f"base_model: {models[0]}")
    lines += ["---", "", f"# {repo}", "", f"{len(saes)} sparse autoencoder(s) trained with [sae](https://pypi.org/project/sae-core/)."]
    lines += ["", "| SAE | architecture | model | layer | d_in | d_sae | k | FVU | L0 | dead |",
              "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in saes:
        m, src = s.get("metrics", {}), s.get("source", {})
        fvu = f"{m['fvu']:.4f}" if "fvu" in m else "-"
        l0 = f"{m['l0']:.1f}" if "l0" in m else "-"
        dead = f"{m['dead_frac']:.1%}" if "dead_frac" in m else "-"
        lines.append(f"| `{s['name']}` | {s['architecture']} | {src.get('model', '-')} | {src.get('layer', '-')} | "
                     f"{s['d_in']} | {s['d_sae']} | {s.get('hyper', {}).get('k', '-')} | {fvu} | {l0} | {dead} |")
    first = saes[0]["name"]
    lines += ["", "## Use", "", "```bash", f"sae download {repo} --sae {first} --out saes/", "```", "",
              "```python", "from sae_core.checkpoint import load_sae", f"sae = load_sae('saes/{first}')",
              "latents = sae.encode(activations)  # (..., d_sae)", "```"]
    if run_config:
        lines += ["", "## Training configuration", "", "```json", json.dumps(run_config.get("train", run_config), indent=2), "```"]
    return "\n".join(lines) + "\n"


def _api(token: str | None, endpoint: str | None) -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token)


def _hub_error(e: Exception, repo: str) -> SAEError:
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(e, RepositoryNotFoundError) or status == 404:
        return SAEError(f"Hub repo {repo!r} not found (or it is private and you are not logged in): check the name, "
                        "or log in with `hf auth login` / set HF_TOKEN")
    if status in (401, 403):
        return SAEError(f"not allowed to access {repo!r} on the Hub (HTTP {status}): log in with `hf auth login` "
                        "or set HF_TOKEN to a token with write access")
    if isinstance(e, HfHubHTTPError):
        return SAEError(f"the Hub refused the request for {repo!r}: {str(e).splitlines()[0]}")
    return SAEError(f"could not reach the Hub for {repo!r}: {e}")


def upload(path: str | Path, repo: str, *, private: bool = False, revision: str | None = None,
           token: str | None = None, endpoint: str | None = None, message: str | None = None) -> str:
    """Upload a run or one checkpoint to ``repo``; returns the repo URL."""
    from sae_core.checkpoint import find_checkpoints

    if repo.count("/") != 1:
        raise SAEError(f"--repo must look like user/name, got {repo!r}")
    path = Path(path)
    ckpts = find_checkpoints(path)
    api = _api(token, endpoint)
    cfgs = [json.loads((c / "cfg.json").read_text()) for c in ckpts]
    run_config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else None
    with tempfile.TemporaryDirectory(prefix="sae-upload-") as tmp:
        staging = Path(tmp)
        for ckpt in ckpts:
            shutil.copytree(ckpt, staging / ckpt.name, ignore=lambda d, names: [n for n in names if n in SKIP or n.endswith(".tmp")])
        if (path / "sweep.json").is_file():
            shutil.copy(path / "sweep.json", staging / "sweep.json")
        (staging / "README.md").write_text(model_card(repo, cfgs, run_config))
        try:
            url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
            api.upload_folder(folder_path=str(staging), repo_id=repo, repo_type="model", revision=revision,
                              commit_message=message or f"Upload {len(ckpts)} SAE(s) with sae")
        except Exception as e:
            raise _hub_error(e, repo) from None
    return str(url)


def download(repo: str, out: str | Path, *, sae: str | None = None, revision: str | None = None,
             token: str | None = None, endpoint: str | None = None) -> Path:
    """Download ``repo`` (or one SAE folder of it) into ``out``; returns ``out``."""
    from huggingface_hub import snapshot_download

    out = Path(out)
    patterns = [f"{sae}/*", "README.md", "sweep.json"] if sae else None
    try:
        snapshot_download(repo_id=repo, repo_type="model", revision=revision, local_dir=str(out),
                          allow_patterns=patterns, token=token, endpoint=endpoint)
    except Exception as e:
        raise _hub_error(e, repo) from None
    if sae and not (out / sae / "cfg.json").is_file():
        names = sorted(p.name for p in out.iterdir() if (p / "cfg.json").is_file()) if out.is_dir() else []
        raise SAEError(f"repo {repo!r} has no SAE {sae!r}" + (f"; it has: {', '.join(names)}" if names else ""))
    return out
