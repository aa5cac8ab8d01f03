"""``sae query``: ask a checkpoint's feature activation database (written by ``sae analyze``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from sae_core.errors import SAEError
from sae_core.validate import check_positive


def query(
    checkpoint: Annotated[Path, typer.Argument(help="One SAE checkpoint directory (or its activations/ directory).")],
    feature: Annotated[int | None, typer.Option(help="A latent: show examples where it fires.")] = None,
    top: Annotated[int | None, typer.Option(help="--feature: the N examples where it fires most (default 10).")] = None,
    quantiles: Annotated[int | None, typer.Option(help="--feature: examples from B bands of its max activation.")] = None,
    per_band: Annotated[int, typer.Option(help="--quantiles: examples per band.")] = 5,
    random: Annotated[int | None, typer.Option(help="--feature: N random examples where it fires.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of --quantiles and --random.")] = 0,
    example: Annotated[int | None, typer.Option(help="A dataset example id: show which latents fire on it.")] = None,
    position: Annotated[int | None, typer.Option(help="--example: only the token at this position of the example.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Top, quantile or random examples of a feature, or the features firing on an example."""
    from sae_core.activation_db import open_activation_db  # lazy: loads numpy

    if (feature is None) == (example is None):
        raise SAEError("pass exactly one of --feature F or --example E")
    views = [v for v in (top, quantiles, random) if v is not None]
    if example is not None and views:
        raise SAEError("--top, --quantiles and --random go with --feature, not --example")
    if feature is not None and position is not None:
        raise SAEError("--position goes with --example, not --feature")
    if len(views) > 1:
        raise SAEError("pass at most one of --top N, --quantiles B, --random N")
    for value, flag in ((top, "--top"), (quantiles, "--quantiles"), (random, "--random"), (per_band, "--per-band")):
        if value is not None:
            check_positive(value, flag)
    db = open_activation_db(checkpoint)
    vocab = _vocab(db.manifest.get("cache"))
    doc: dict[str, Any] = {"checkpoint": str(checkpoint), "n_tokens": db.n_tokens, "n_rows": db.n_rows,
                           "split": db.manifest.get("split")}
    if example is not None:
        hits = db.latents_at(example, position)
        doc.update(example=example, position=position, firings=_with_text(hits.records(), vocab))
    else:
        assert feature is not None
        doc["feature"] = feature
        doc["frequency"] = float(db.frequency()[db.check_latent(feature)])
        if quantiles is not None:
            doc["bands"] = [{"lo": b.lo, "hi": b.hi, "count": b.count, "examples": _with_text(b.hits.records(), vocab)}
                            for b in db.quantiles(feature, quantiles, per_band, seed)]
        elif random is not None:
            doc["random"] = _with_text(db.sample(feature, random, seed).records(), vocab)
        else:
            doc["top"] = _with_text(db.top(feature, top or 10).records(), vocab)
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    _print(doc)


def _vocab(cache: str | None) -> list[str] | None:
    path = Path(cache) / "vocab.json" if cache else None
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def _with_text(records: list[dict[str, Any]], vocab: list[str] | None) -> list[dict[str, Any]]:
    if vocab is not None:
        for r in records:
            tid = r.get("token_id", -1)
            if 0 <= tid < len(vocab):
                r["text"] = vocab[tid]
    return records


def _table(records: list[dict[str, Any]], keys: tuple[str, ...]) -> None:
    cols = [k for k in keys if any(k in r for r in records)]
    rows = [[f"{r[k]:.4g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in cols] for r in records]
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(cols)]
    typer.echo("  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)))
    for row in rows:
        typer.echo("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))


_EXAMPLE_KEYS = ("row", "example", "slot", "position", "token_id", "text", "value")


def _print(doc: dict[str, Any]) -> None:
    typer.echo(f"{doc['checkpoint']}: {doc['n_tokens']:,} tokens in {doc['n_rows']:,} rows (split {doc['split']})")
    if "firings" in doc:
        where = f" position {doc['position']}" if doc["position"] is not None else ""
        typer.echo(f"latents firing on example {doc['example']}{where}: {len(doc['firings'])}")
        _table(doc["firings"], ("position", "slot", "token_id", "text", "latent", "value"))
        return
    typer.echo(f"feature {doc['feature']}: fires on {doc['frequency']:.4%} of tokens")
    if "bands" in doc:
        for band in doc["bands"]:
            typer.echo(f"band ({band['lo']:.2f}, {band['hi']:.2f}] of max: {band['count']} examples")
            if band["examples"]:
                _table(band["examples"], _EXAMPLE_KEYS)
        return
    records = doc.get("top", doc.get("random", []))
    typer.echo(("top" if "top" in doc else "random") + f" examples: {len(records)}")
    if records:
        _table(records, _EXAMPLE_KEYS)


def register(app: typer.Typer) -> None:
    app.command("query")(query)
