"""``sae features``: which features of an SAE fire on your text or image, per token / patch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from sae_core.errors import SAEError
from sae_core.inference.target import open_target
from sae_core.validate import check_input_file, check_output_dir, check_positive


def features(
    checkpoint: Annotated[Path, typer.Argument(help="One SAE checkpoint directory.")],
    text: Annotated[str | None, typer.Option(help="A text to run through the SAE's model.")] = None,
    image: Annotated[Path | None, typer.Option(help="An image file (for SAEs of image models).")] = None,
    top: Annotated[int, typer.Option(help="Features shown per token / patch (and heatmaps per image).")] = 5,
    out: Annotated[Path | None, typer.Option(help="Images: directory for the heatmap PNGs of the image's top features.")] = None,
    data: Annotated[Path | None, typer.Option(help="Cache whose model to use (default: the one the SAE was trained on).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, ...")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Per token (or patch): the SAE's top features on your own input, with their values."""

    if (text is None) == (image is None):
        raise SAEError("pass exactly one of --text \"...\" or --image PATH")
    check_positive(top, "--top")
    if image is not None:
        check_input_file(image, "--image")
        if out is None:
            raise SAEError("--image needs --out DIR: the heatmaps of the image's top features are written there")
        check_output_dir(out)
    if text is not None and not text.strip():
        raise SAEError("--text is empty; pass some text")
    target = open_target(checkpoint, data=data, device=device)  # JSON only: refusals come before loading
    target.require("text" if text is not None else "image", "--text" if text is not None else "--image")
    example: Any = text
    if image is not None:  # the adapter's make_inputs receives the loaded RGB PIL image, not the path
        from sae_core.inference.heatmap import read_image  # lazy: loads numpy

        example = read_image(image)
    model = target.model()  # the model first: loading it is where the time goes
    from sae_core.inference.features import (  # lazy: loads torch, numpy
        record,
        token_table,
        top_features,
        write_heatmaps,
    )

    result, hook = record(model, target.sae, [example])
    if image is not None and result.inputs.images is None:
        result.inputs.images = [example]  # heatmaps are drawn over it even if the adapter keeps no images
    grid = target.meta.extra.get("grid")
    doc: dict[str, Any] = {"checkpoint": str(checkpoint), "sae": target.name, "model": target.meta.model,
                           "layer": hook.layer, "tokens_kind": hook.tokens, "top": top}
    doc["tokens"] = token_table(result, hook, top, grid)
    if image is not None:
        assert out is not None
        best = top_features(result, hook, top)
        doc["image"] = str(image)
        doc["image_top_features"] = [[i, v] for i, v in best]
        reads_patches = hook.tokens in ("patch", "all") and "patch" in result.inputs.kinds
        doc["heatmaps"] = [str(p) for p in write_heatmaps(result, hook, best, target.meta.extra, out)] if reads_patches else []
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    _print(doc)


def _print(doc: dict[str, Any]) -> None:
    typer.echo(f"SAE {doc['sae']} at {doc['layer']} of {doc['model']} ({doc['tokens_kind']} tokens); "
               f"top {doc['top']} features per {'patch' if 'image' in doc else 'token'} as id:value")
    for t in doc["tokens"]:
        where = t.get("token") if "token" in t else (f"patch {t['patch'][0]},{t['patch'][1]}" if "patch" in t else t["kind"])
        feats = "  ".join(f"{i}:{v:.3f}" for i, v in t["features"]) or "(none fire)"
        typer.echo(f"  {where!s:>16}  {feats}")
    if "image" in doc:
        best = ", ".join(f"{i} ({v:.3f})" for i, v in doc["image_top_features"]) or "none"
        typer.echo(f"image's top features (max over its tokens): {best}")
        if doc["heatmaps"]:
            typer.echo(f"heatmaps: {Path(doc['heatmaps'][0]).parent}/feature-<id>.png ({len(doc['heatmaps'])} files)")
        else:
            typer.echo(f"no heatmaps: this SAE reads {doc['tokens_kind']} tokens, not patches")


def register(app: typer.Typer) -> None:
    app.command("features")(features)
