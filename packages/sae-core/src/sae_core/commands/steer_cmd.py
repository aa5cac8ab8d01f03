"""``sae steer``: generation with and without a feature added to the model (causal LMs)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from sae_core.errors import SAEError
from sae_core.inference.target import open_target
from sae_core.validate import check_positive


def steer(
    checkpoint: Annotated[Path, typer.Argument(help="One SAE checkpoint directory (of a causal LM).")],
    prompt: Annotated[str, typer.Option(help="The text to continue.")],
    feature: Annotated[int, typer.Option(help="The feature to add.")],
    strength: Annotated[float, typer.Option(help="Added strength × the feature's decoder row at every token.")],
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate (greedy).")] = 20,
    data: Annotated[Path | None, typer.Option(help="Cache whose model to use (default: the one the SAE was trained on).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, ...")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Greedy generation with and without a feature added (strength × its decoder row), side by side."""

    check_positive(max_new_tokens, "--max-new-tokens")
    if not math.isfinite(strength):
        raise SAEError(f"--strength must be a finite number, got {strength}")
    if not prompt.strip():
        raise SAEError("--prompt is empty; pass the text to continue")
    target = open_target(checkpoint, data=data, device=device)  # JSON only: every refusal comes before loading
    target.require_generation("sae steer")
    target.require_features([feature])
    model = target.model()
    from sae_core.inference import (  # torch: only once the options are checked  # lazy: loads torch, numpy
        SAEHook,
        Steer,
    )

    hook = SAEHook(target.sae, edits=[Steer((feature,), strength=strength)], record=False)
    clean = model.generate(prompt, max_new_tokens=max_new_tokens)
    steered = model.generate(prompt, hook, max_new_tokens=max_new_tokens)
    doc = {"checkpoint": str(checkpoint), "sae": target.name, "model": target.meta.model, "layer": hook.layer,
           "feature": feature, "strength": strength, "prompt": prompt, "max_new_tokens": max_new_tokens,
           "clean": clean.text, "steered": steered.text,
           "clean_token_ids": clean.token_ids, "steered_token_ids": steered.token_ids,
           "changed": clean.token_ids != steered.token_ids}
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    typer.echo(f"SAE {target.name} at {hook.layer} of {target.meta.model}: feature {feature} × {strength:g}, "
               f"{max_new_tokens} greedy tokens")
    typer.echo(f"prompt  | {prompt}")
    typer.echo(f"clean   | {clean.text}")
    typer.echo(f"steered | {steered.text}")
    if not doc["changed"]:
        typer.echo("(the steered generation is identical; try a larger --strength)")


def register(app: typer.Typer) -> None:
    app.command("steer")(steer)
