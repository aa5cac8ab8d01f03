"""Everything the viewer reads: only files written by `sae train`, `sae analyze` and `sae ablate`
(and the dataset's images or the cache's vocab.json), never a model forward (the "Your input"
page runs the model on demand, in :mod:`sae_viewer.live`). Per-latent reads slice the
safetensors files (``safe_open(...).get_slice``), so a 65k-latent SAE opens as fast as a small one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class SAEFiles:
    name: str
    path: Path
    cfg: dict[str, Any]

    def has(self, filename: str) -> bool:
        return (self.path / filename).is_file()


def find_saes(run: Path) -> list[SAEFiles]:
    """SAE checkpoint directories of a run (or the run itself if it is one checkpoint)."""
    dirs = [run] if (run / "cfg.json").is_file() else sorted(p for p in run.iterdir() if (p / "cfg.json").is_file())
    return [SAEFiles(d.name, d, json.loads((d / "cfg.json").read_text())) for d in dirs]


def sweep_rows(saes: list[SAEFiles]) -> list[dict[str, Any]]:
    rows = []
    for s in saes:
        m = s.cfg.get("metrics", {})
        row = {
            "name": s.name,
            "arch": s.cfg.get("architecture"),
            "d_sae": s.cfg.get("d_sae"),
            "k": s.cfg.get("hyper", {}).get("k"),
            "lr": s.cfg.get("train", {}).get("lr"),
            "layer": s.cfg.get("source", {}).get("layer"),
            "fvu": m.get("fvu"),
            "l0": m.get("l0"),
            "dead": m.get("dead_frac"),
            "dense": m.get("dense_frac"),
        }
        if s.has("reconstruction.json"):
            rec = json.loads((s.path / "reconstruction.json").read_text())
            row["held-out fvu"] = rec.get("fvu")
            row["cosine"] = rec.get("cosine")
        down = downstream(s)
        if down is not None and "skipped" not in down:
            if down.get("kind") == "lm_ce":
                row["CE recovered"] = down.get("ce_loss_recovered")
            elif down.get("kind") == "embedding_cosine":
                row["spliced emb. cosine"] = down.get("embedding_cosine")
        rows.append(row)
    return rows


def downstream(s: SAEFiles) -> dict[str, Any] | None:
    """``downstream.json`` (the SAE spliced into the model), as written by ``sae analyze``."""
    return json.loads((s.path / "downstream.json").read_text()) if s.has("downstream.json") else None


def downstream_line(result: dict[str, Any]) -> str:
    """One sentence summarising a downstream result for the SAE's page."""
    where = f"{result.get('layer')}, {result.get('tokens')} tokens"
    if "skipped" in result:
        return f"Downstream (SAE spliced into the model): skipped — {result['skipped']}"
    held = f"{result.get('n_rows', '?')} held-out rows"
    if result.get("kind") == "lm_ce":
        rec = result.get("ce_loss_recovered")
        rec_s = f"{rec:.1%}" if rec is not None else "n/a"
        if rec is not None and result.get("ce_loss_recovered_se") is not None:
            rec_s += f" ± {result['ce_loss_recovered_se']:.1%}"
        line = (f"Downstream (SAE spliced in at {where}; {held}): CE loss recovered **{rec_s}** — CE clean "
                f"{result['ce_clean']:.4f}, spliced {result['ce_spliced']:.4f}, zero-ablated {result['ce_zero_ablated']:.4f}")
        if result.get("kl_spliced") is not None:
            line += f"; KL(clean ‖ spliced) {_pm(result['kl_spliced'], result.get('kl_spliced_se'), '.4f')}"
    elif "embedding_cosine" in result:
        zero = result.get("embedding_cosine_zero_ablated")
        line = (f"Downstream (SAE spliced in at {where}; {held}): cosine of the {result.get('embedding', 'embedding')} "
                f"with vs without the SAE **{result['embedding_cosine']:.4f}**"
                + (f" (zero ablation: {zero:.4f})" if zero is not None else ""))
    else:  # a third-party adapter's metrics
        numbers = ", ".join(f"{k} {v:.4g}" for k, v in result.items()
                            if isinstance(v, float) and k != "cache_rel_error")
        line = f"Downstream (SAE spliced in at {where}; {held}): {numbers or result.get('kind', 'no metrics')}"
    if result.get("warning"):
        line += f". Warning: {result['warning']}"
    return line


def ablation(s: SAEFiles) -> dict[str, Any] | None:
    """``ablation.json`` (``sae ablate``), or None."""
    if not s.has("ablation.json"):
        return None
    try:
        doc = json.loads((s.path / "ablation.json").read_text())
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def ablation_lines(doc: dict[str, Any] | None, latent: int) -> list[str]:
    """Sentences for a latent's page: its effect when ablated alone, then in the joint ablations
    that include it (``sae ablate`` results; the numbers are ± one standard error)."""
    if not doc:
        return []
    found = [r for r in doc.get("results", []) if latent in r.get("features", [])]
    found.sort(key=lambda r: len(r["features"]))
    return [_ablation_line(doc.get("kind"), r, latent) for r in found]


def _pm(v: Any, se: Any, fmt: str = "+.4f") -> str:
    if v is None:
        return "n/a"
    return f"{v:{fmt}}" + (f" ± {se:.4f}" if se is not None else "")


def _ablation_line(kind: str | None, r: dict[str, Any], latent: int) -> str:
    feats = r["features"]
    what = f"Ablating latent {latent}" if feats == [latent] else f"Ablating latents {', '.join(map(str, feats))} together"
    fired = ", ".join(f"{f:.1%}" for f in r.get("fired_frac", []))
    where = f"{r.get('n_rows', '?')} held-out rows, fires on {fired} of their tokens"
    if kind == "lm_ce":
        return (f"{what} ({where}): CE **{_pm(r.get('ce_delta'), r.get('ce_delta_se'))}** vs the spliced SAE "
                f"({r.get('ce_spliced', float('nan')):.4f} → {r.get('ce_ablated', float('nan')):.4f}); removed from the "
                f"real activations: CE {_pm(r.get('ce_delta_exact'), r.get('ce_delta_exact_se'))} vs clean, "
                f"KL {r.get('kl_ablated_exact', float('nan')):.2e}")
    return (f"{what} ({where}): cosine of the {r.get('embedding', 'embedding')} with the clean one "
            f"**{_pm(r.get('cos_ablated'), r.get('cos_ablated_se'), '.4f')}** (spliced without ablation: "
            f"{_pm(r.get('cos_spliced'), r.get('cos_spliced_se'), '.4f')}); removed from the real activations: "
            f"{_pm(r.get('cos_ablated_exact'), r.get('cos_ablated_exact_se'), '.4f')}")


def metrics(s: SAEFiles) -> list[dict[str, Any]]:
    if not s.has("metrics.jsonl"):
        return []
    return [json.loads(x) for x in (s.path / "metrics.jsonl").read_text().splitlines() if x.strip()]


def feature_table(s: SAEFiles) -> dict[str, np.ndarray] | None:
    """frequency / mean / max activation of every latent (three d_sae vectors)."""
    if not s.has("feature_stats.safetensors"):
        return None
    from safetensors.numpy import load_file

    t = load_file(str(s.path / "feature_stats.safetensors"))
    return {k: t[k] for k in ("frequency", "mean_activation", "max_activation")}


def latent_histogram(s: SAEFiles, latent: int) -> tuple[np.ndarray, np.ndarray] | None:
    if not s.has("feature_stats.safetensors"):
        return None
    from safetensors import safe_open

    with safe_open(str(s.path / "feature_stats.safetensors"), "np") as f:
        return f.get_slice("act_hist_counts")[latent : latent + 1][0], f.get_tensor("act_hist_edges")


def top_examples(s: SAEFiles, latent: int) -> dict[str, Any] | None:
    """The top examples of one latent, read by slicing (d_sae, k, ...) tensors."""
    if not s.has("top_examples.safetensors"):
        return None
    from safetensors import safe_open

    meta = json.loads((s.path / "top_examples.json").read_text())
    out: dict[str, Any] = {"meta": meta}
    with safe_open(str(s.path / "top_examples.safetensors"), "np") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
            out[key] = f.get_slice(key)[latent : latent + 1][0]
    keep = out["rows"] >= 0
    for key in ("rows", "examples", "values", "token_acts", "token_ids"):
        if key in out:
            out[key] = out[key][keep]
    return out


def vocab(cache: str) -> list[str] | None:
    path = Path(cache) / "vocab.json"
    return json.loads(path.read_text()) if path.is_file() else None


def detokenize(tok: str) -> str:
    """Readable form of a tokenizer's piece (WordPiece '##', GPT-2 'Ġ', SentencePiece '▁')."""
    if tok.startswith("##"):
        return tok[2:]
    return " " + tok.replace("Ġ", "").replace("▁", "") if tok[:1] in ("Ġ", "▁") else " " + tok


def open_image(meta: dict[str, Any], example_id: int) -> Any:
    """The original image of a dataset example, through the dataset plugin that cached it."""
    from sae_core.datasets import open_dataset

    dataset = meta.get("dataset", {})
    ds = open_dataset(dataset["spec"], "image", **dataset.get("options", {}))
    return ds[int(example_id)].data


def heatmap_overlay(image: Any, patch_acts: np.ndarray, extra: dict[str, Any], size: int = 224) -> Any:
    """Overlay per-patch activations on the image region the model saw (resize + center crop)."""
    from sae_core.inference.heatmap import heatmap_overlay as overlay

    return overlay(image, patch_acts, extra, size)
