"""``sae ablate``: the ablation study — the model's loss with chosen features removed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from sae_core.errors import SAEError
from sae_core.inference.target import open_target, parse_feature_ids
from sae_core.validate import check_output_dir, check_positive


def ablate(
    checkpoint: Annotated[Path, typer.Argument(help="One SAE checkpoint directory.")],
    features: Annotated[str, typer.Option(help="Comma-separated feature ids, ablated together (or --each).")],
    each: Annotated[bool, typer.Option("--each", help="Ablate every listed feature on its own instead.")] = False,
    data: Annotated[Path | None, typer.Option(help="Cache to evaluate on (default: the one the SAE was trained on).")] = None,
    tokens: Annotated[int, typer.Option(help="Held-out tokens to evaluate (the SAE's tokens; rows are added until reached).")] = 8192,
    max_rows: Annotated[int, typer.Option(help="At most this many held-out rows.")] = 512,
    split: Annotated[str | None, typer.Option(
        help="Held-out rows: val (the SAE's validation examples; default when it was trained with a validation "
             "split), tail (the last 10% of the cache; default otherwise) or all.")] = None,
    batch_rows: Annotated[int, typer.Option(help="Rows per forward pass.")] = 8,
    device: Annotated[str, typer.Option(help="cpu, cuda, ...")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Change in the model's loss when features are ablated, on held-out rows (writes ablation.json)."""
    from sae_core.inference.heldout import SIDES  # lazy: loads numpy

    for value, flag in ((tokens, "--tokens"), (max_rows, "--max-rows"), (batch_rows, "--batch-rows")):
        check_positive(value, flag)
    if split is not None and split not in SIDES:
        raise SAEError(f"--split must be val, all or tail, got {split!r}")
    ids = parse_feature_ids(features)
    check_output_dir(checkpoint, "CHECKPOINT")  # ablation.json is written there
    target = open_target(checkpoint, data=data, device=device)  # JSON only: refusals come before loading
    target.require_features(ids)
    from sae_core.inference.ablation import (  # torch: only once the options are checked  # lazy: loads torch, numpy
        FILE,
        ablation_study,
    )

    sets = [[i] for i in dict.fromkeys(ids)] if each else [sorted(set(ids))]
    doc = ablation_study(target, sets, tokens=tokens, max_rows=max_rows, batch_rows=batch_rows, split=split)
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    _table(doc)
    typer.echo(f"written to {checkpoint / FILE}")


def _pm(value: float | None, se: float | None, fmt: str = "+.4f") -> str:
    if value is None:
        return "n/a"
    return f"{value:{fmt}}" + (f" ± {se:.4f}" if se is not None else "")


def _table(doc: dict[str, Any]) -> None:
    first = doc["results"][0]
    unit = f"{first['n_targets']} next-token targets" if doc["kind"] == "lm_ce" else f"{first['n_tokens']} tokens"
    typer.echo(f"ablation of SAE {doc['sae']} at {first['layer']} ({first['tokens']} tokens) of {first['model']}, "
               f"on {first['n_rows']} held-out cache rows ({_where(first)}; {unit})")
    if doc["kind"] == "lm_ce":
        typer.echo(f"CE clean {_pm(first['ce_clean'], first['ce_clean_se'], '.4f')}, "
                   f"spliced {_pm(first['ce_spliced'], first['ce_spliced_se'], '.4f')}")
        typer.echo(f"{'features':>16}  {'fired':>7}  {'CE spliced+ablated':>18}  {'Δ vs spliced':>20}  "
                   f"{'CE exact ablation':>17}  {'Δ vs clean':>20}  {'KL vs clean':>11}")
        for r in doc["results"]:
            typer.echo(f"{','.join(map(str, r['features'])):>16}  {_fired(r):>7}  {r['ce_ablated']:18.4f}  "
                       f"{_pm(r['ce_delta'], r['ce_delta_se']):>20}  {r['ce_ablated_exact']:17.4f}  "
                       f"{_pm(r['ce_delta_exact'], r['ce_delta_exact_se']):>20}  {r['kl_ablated_exact']:11.5f}")
        typer.echo("Δ vs spliced: with the SAE's reconstruction in place; Δ vs clean: features removed from the "
                   "real activations (error term kept)")
        return
    typer.echo(f"cosine of the {first['embedding']} with the clean one: spliced "
               f"{_pm(first['cos_spliced'], first['cos_spliced_se'], '.4f')}")
    typer.echo(f"{'features':>16}  {'fired':>7}  {'cos spliced+ablated':>19}  {'Δ vs spliced':>20}  {'cos exact ablation':>18}")
    for r in doc["results"]:
        typer.echo(f"{','.join(map(str, r['features'])):>16}  {_fired(r):>7}  {r['cos_ablated']:19.4f}  "
                   f"{_pm(r['cos_delta'], r['cos_delta_se']):>20}  {_pm(r['cos_ablated_exact'], r['cos_ablated_exact_se'], '.4f'):>18}")


def _where(r: dict[str, Any]) -> str:
    """Which rows a result was measured on, in words."""
    lo, hi = r["rows"]
    side = r.get("split")
    if side == "val":
        return f"validation examples, among rows {lo}:{hi}"
    return f"rows {lo}:{hi}" if side != "tail" else f"the cache's last rows {lo}:{hi}"


def _fired(r: dict[str, Any]) -> str:
    return "/".join(f"{f:.1%}" for f in r["fired_frac"])


def register(app: typer.Typer) -> None:
    app.command("ablate")(ablate)
