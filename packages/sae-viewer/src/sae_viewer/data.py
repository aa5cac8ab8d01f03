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
from sae_core import (
    CFG_FILE,
    METRICS_FILE,
    SAECheckpointConfig,
    filenames,
    open_dataset,
    read_cfg,
)

RECONSTRUCTION, DOWNSTREAM, ABLATION = filenames.RECONSTRUCTION_FILE, filenames.DOWNSTREAM_FILE, filenames.ABLATION_FILE
FEATURE_STATS, TOP_EXAMPLES, TOP_EXAMPLES_META = (filenames.FEATURE_STATS_FILE, filenames.TOP_EXAMPLES_FILE,
                                                  filenames.TOP_EXAMPLES_META_FILE)
#: written by text adapters' write_extras into the cache directory: token id -> piece
VOCAB = filenames.VOCAB_FILE


@dataclass
class SAEFiles:
    name: str
    path: Path
    cfg: SAECheckpointConfig | None = None  # None where only the analysis files are read

    def has(self, filename: str) -> bool:
        return (self.path / filename).is_file()


def find_saes(run: Path) -> list[SAEFiles]:
    """SAE checkpoint directories of a run (or the run itself if it is one checkpoint)."""
    dirs = [run] if (run / CFG_FILE).is_file() else sorted(p for p in run.iterdir() if (p / CFG_FILE).is_file())
    return [SAEFiles(d.name, d, read_cfg(d)) for d in dirs]


def sweep_rows(saes: list[SAEFiles]) -> list[dict[str, Any]]:
    rows = []
    for s in saes:
        cfg = s.cfg if s.cfg is not None else read_cfg(s.path)
        m = cfg.metrics
        row = {
            "name": s.name,
            "arch": cfg.architecture,
            "d_sae": cfg.d_sae,
            "k": cfg.hyper.get("k"),
            "lr": cfg.train.lr,
            "layer": layer_label(cfg),
            "fvu": m.get("fvu"),
            "l0": m.get("l0"),
            "dead": m.get("dead_frac"),
            "dense": m.get("dense_frac"),
        }
        if s.has(RECONSTRUCTION):
            rec = json.loads((s.path / RECONSTRUCTION).read_text())
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


def layer_label(cfg: Any) -> str | None:
    """The SAE's layer; a transcoder's as ``input → target`` (its FVU is the target's)."""
    if getattr(cfg, "is_transcoder", False):
        return f"{cfg.source.layer} → {cfg.source.layer_out} (transcoder)"
    return cfg.source.layer


def downstream(s: SAEFiles) -> dict[str, Any] | None:
    """``downstream.json`` (the SAE spliced into the model), as written by ``sae analyze``."""
    return json.loads((s.path / DOWNSTREAM).read_text()) if s.has(DOWNSTREAM) else None


def downstream_line(result: dict[str, Any]) -> str:
    """One sentence summarising a downstream result for the SAE's page."""
    where = f"{result.get('layer')}, {result.get('tokens')} tokens"
    if result.get("source"):  # a transcoder: the layer is predicted from its source layer
        where = f"{result.get('layer')} as predicted from {result['source']}, {result.get('tokens')} tokens"
    if "skipped" in result:
        return f"Downstream (SAE spliced into the model): skipped — {result['skipped']}"
    held = f"{result.get('n_rows', '?')} held-out rows"
    if result.get("not_measurable"):  # zero ablation changes nothing: no splice can move the metric
        return f"Downstream (SAE spliced in at {where}; {held}): not measurable — {result['not_measurable']}"
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
    if not s.has(ABLATION):
        return None
    try:
        doc = json.loads((s.path / ABLATION).read_text())
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
    if not s.has(METRICS_FILE):
        return []
    records = []
    for line in (s.path / METRICS_FILE).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # a partial last line of a run still training (or killed mid-write)
            continue
    return records


def feature_table(s: SAEFiles) -> dict[str, np.ndarray] | None:
    """frequency / mean / max activation of every latent (three d_sae vectors)."""
    if not s.has(FEATURE_STATS):
        return None
    from safetensors.numpy import load_file

    t = load_file(str(s.path / FEATURE_STATS))
    return {k: t[k] for k in ("frequency", "mean_activation", "max_activation")}


def latent_histogram(s: SAEFiles, latent: int) -> tuple[np.ndarray, np.ndarray] | None:
    if not s.has(FEATURE_STATS):
        return None
    from safetensors import safe_open

    with safe_open(str(s.path / FEATURE_STATS), "np") as f:
        return f.get_slice("act_hist_counts")[latent : latent + 1][0], f.get_tensor("act_hist_edges")


def top_examples(s: SAEFiles, latent: int) -> dict[str, Any] | None:
    """The top examples of one latent, read by slicing (d_sae, k, ...) tensors."""
    if not s.has(TOP_EXAMPLES):
        return None
    from safetensors import safe_open

    meta = json.loads((s.path / TOP_EXAMPLES_META).read_text())
    out: dict[str, Any] = {"meta": meta}
    with safe_open(str(s.path / TOP_EXAMPLES), "np") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
            out[key] = f.get_slice(key)[latent : latent + 1][0]
    keep = out["rows"] >= 0
    for key in ("rows", "examples", "values", "token_acts", "token_ids"):
        if key in out:
            out[key] = out[key][keep]
    return out


def vocab(cache: str) -> list[str] | None:
    """Token pieces by id of a text cache (``sae_core.tokens.load_vocab``), or None."""
    from sae_core import load_vocab

    return load_vocab(cache)


def detokenize(tok: str) -> str:
    """Readable form of a tokenizer's piece (``sae_core.tokens.detokenize``, shared with the analyses)."""
    from sae_core import detokenize as readable

    return readable(tok)


def open_image(meta: dict[str, Any], example_id: int) -> Any:
    """The original image of a dataset example, through the dataset plugin that cached it."""
    dataset = meta.get("dataset", {})
    ds = open_dataset(dataset["spec"], dataset.get("modality") or "image", **dataset.get("options", {}))
    return ds[int(example_id)].data


def signed(meta: dict[str, Any]) -> bool:
    """Whether the SAE's codes may be negative (top_examples.json, written by ``sae analyze``)."""
    return not meta.get("non_negative_codes", True)


def heatmap_overlay(image: Any, patch_acts: np.ndarray, extra: dict[str, Any], size: int = 224) -> Any:
    """Overlay per-patch activations on the image region the model saw (resize + center crop).

    ``extra`` is the cache's adapter metadata, read as an :class:`ImageGeometry` (a bad or
    missing key is a ``DataError`` naming it). Red marks positive codes, blue negative ones;
    opacity is |code| relative to the strongest patch (``sae_core.heatmap_overlay``, shared with
    ``sae features --image``).
    """
    from sae_core import heatmap_overlay as overlay

    return overlay(image, patch_acts, extra, size)


def latent_stats(s: SAEFiles, latent: int) -> dict[str, float] | None:
    """frequency / mean / max activation of one latent (a slice of feature_stats.safetensors)."""
    if not s.has(FEATURE_STATS):
        return None
    from safetensors import safe_open

    with safe_open(str(s.path / FEATURE_STATS), "np") as f:
        return {k: float(f.get_slice(k)[latent : latent + 1][0])
                for k in ("frequency", "mean_activation", "max_activation")}


def latent_page(s: SAEFiles, latent: int) -> dict[str, Any]:
    """Everything a latent's page shows, from the checkpoint's analysis files (None where a file
    is absent). The viewer reads this under :func:`sae_viewer.snapshot.consistent`, so one page
    never mixes two runs of ``sae analyze``."""
    from sae_viewer import latent_files as lf

    probe = lf.probe(s.path)
    return {
        "stats": latent_stats(s, latent),
        "histogram": latent_histogram(s, latent),
        "summary": lf.read_json(s.path / lf.FEATURE_STATS_SUMMARY),
        "top": top_examples(s, latent),
        "quantiles": lf.quantile_examples(s.path, latent),
        "neighbours": lf.neighbours(s.path, latent),
        "cooccurrence": lf.cooccurrence(s.path, latent),
        "logit_effects": lf.logit_effects(s.path, latent),
        "probe": probe,
        "probe_labels": lf.probe_labels(probe, latent),
        "ablation": ablation_lines(ablation(s), latent),
        "downstream": downstream(s),
    }
