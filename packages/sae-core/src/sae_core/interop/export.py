"""``sae export``'s engine: every SAE of a run checked, then all written, or nothing.

The exporter (a plugin component, ``register_exporters``) first checks every checkpoint, so a
run mixing SAEs the format can and cannot hold fails before any file is written, with one line
naming the SAE and why. Then every SAE is written into a staging directory beside ``out``,
renamed to ``out`` at the end (:func:`sae_core.io.staged_dir`): a crash or a full disk midway
leaves ``out`` as it was.
"""

from __future__ import annotations

from pathlib import Path

from sae_core.checkpoint.cfg import read_cfg
from sae_core.checkpoint.discovery import find_checkpoints, is_checkpoint
from sae_core.errors import ExportError, SAEError
from sae_core.io import staged_dir
from sae_core.plugin_calls import guarded


def export_checkpoints(path: str | Path, out: str | Path, *, format: str = "saelens", overwrite: bool = False) -> list[Path]:
    """Export the SAE at ``path`` (or every SAE of the run at ``path``) in ``format`` to ``out``
    (one SAE: ``out`` itself; a run: one subdirectory per SAE). Returns the directories written."""
    from sae_core.plugins import get_component  # lazy: loads pluggy

    path, out = Path(path), Path(out)
    component = get_component("exporter", format)
    exporter = component.build()
    ckpts = find_checkpoints(path)
    single = len(ckpts) == 1 and is_checkpoint(path)
    problems: list[str] = []
    cfgs = []
    for ckpt in ckpts:
        try:
            cfg = read_cfg(ckpt)
            with guarded("exporter", format, "check(checkpoint, cfg)", "None, or an ExportError saying why not"):
                exporter.check(ckpt, cfg)
            cfgs.append(cfg)
        except SAEError as e:
            problems.append(f"{ckpt.name}: {e}" if not single else str(e))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        where = "" if single else f"{len(problems)} of the {len(ckpts)} SAEs of {path} cannot be exported as {format}; "
        raise ExportError(f"{where}{problems[0]}{more}; nothing was written")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"--out {out} already exists and is not empty; pass --overwrite to replace it, or another --out")
    with staged_dir(out, replace=overwrite) as stage:
        for ckpt, cfg in zip(ckpts, cfgs, strict=True):
            target = stage if single else stage / ckpt.name
            target.mkdir(exist_ok=True)
            with guarded("exporter", format, "write(checkpoint, cfg, out)", "the export's files written under out"):
                exporter.write(ckpt, cfg, target)
    return [out] if single else [out / c.name for c in ckpts]
