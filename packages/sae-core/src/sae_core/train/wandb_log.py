"""Weights & Biases logging: one W&B run per SAE, grouped by the sweep.

A sweep is many SAEs; comparing them is what W&B's run table and grouped charts are for, so
every SAE gets its own run (name: the SAE's name; group: ``--wandb-group`` or the run
directory's name) with its own config, its metrics as history (``train/fvu``, ``val/fvu``, ...
at the training step) and its final metrics (cfg.json's, after calibration) in the summary under
``final/...``. Runs of one data group are open together (``reinit="create_new"``, wandb >=
0.19) and finished when the group's checkpoints are written; ``wandb_artifact`` then logs each
checkpoint (cfg.json + sae.safetensors) as a ``model`` artifact. Run ids are kept in
``state/wandb.json``, so ``sae train --resume`` continues the same W&B runs. Only the main rank
logs (it sees every SAE's records, also with ``--parallel sae``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import string
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sae_core.checkpoint.cfg import read_cfg
from sae_core.checkpoint.filenames import CFG_FILE, STATE_DIR, WEIGHTS_FILE
from sae_core.errors import ConfigError
from sae_core.io import atomic_write_json
from sae_core.train.config import SAEConfig, TrainConfig

IDS_FILE = "wandb.json"  # under the run's state/: {sae name: W&B run id}


def metric_key(key: str) -> str:
    """metrics.jsonl key -> W&B key: ``val_fvu`` -> ``val/fvu``, ``fvu`` -> ``train/fvu``."""
    return f"val/{key[4:]}" if key.startswith("val_") else f"train/{key}"


def _artifact_name(group: str, sae: str) -> str:
    """W&B artifact names allow letters, digits, '-', '_' and '.' only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{group}-{sae}")[:128]


def _new_id() -> str:
    """A W&B run id (8 lowercase letters/digits, like wandb's own)."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


class WandbRuns:
    """The W&B runs of one ``sae train`` call, keyed by SAE name."""

    def __init__(self, config: TrainConfig, out: Path, *, resume: bool) -> None:
        s = config.train
        try:
            import wandb
        except ImportError:
            raise ConfigError("--wandb needs the wandb package: pip install 'sae-core[wandb]'") from None
        self.wandb = wandb
        self.config, self.out = config, out
        self.group = s.wandb_group or out.resolve().name
        self.runs: dict[str, Any] = {}
        self.ids_path = out / STATE_DIR / IDS_FILE
        self.ids: dict[str, str] = {}
        if resume and self.ids_path.is_file():
            self.ids = json.loads(self.ids_path.read_text())

    def start(self, saes: list[SAEConfig]) -> None:
        """Open (or, on resume, continue) the runs of these SAEs."""
        s = self.config.train
        for sae in saes:
            run_id = self.ids.get(sae.name) or _new_id()
            self.runs[sae.name] = self.wandb.init(
                project=s.wandb_project or os.environ.get("WANDB_PROJECT") or "sae", entity=s.wandb_entity or None,
                group=self.group, name=sae.name,
                id=run_id, resume="allow", tags=list(s.wandb_tags) or None, notes=s.wandb_notes or None,
                mode=s.wandb_mode or None, job_type="train", dir=None if os.environ.get("WANDB_DIR") else str(self.out),
                config=self._run_config(sae),
                reinit="create_new",
            )
            self.ids[sae.name] = run_id

        self.ids_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.ids_path, self.ids)

    def _run_config(self, sae: SAEConfig) -> dict[str, Any]:
        """What W&B shows as the run's config: the SAE (arch, d_sae, lr, hyper, data stream), the
        shared training settings and where it came from."""
        return {
            "sae": sae.name, "arch": sae.arch, "d_sae": sae.d_sae, "lr": sae.lr, "hyper": sae.hyper,
            "data": sae.data.identity(), "train": asdict(self.config.train), "cache": self.config.cache,
            "out": str(self.out), "n_saes_in_sweep": len(self.config.saes),
        }

    def log(self, name: str, body: dict[str, Any]) -> None:
        """One metrics.jsonl record of SAE ``name`` (``step`` is the W&B step)."""
        run = self.runs.get(name)
        if run is not None:
            run.log({metric_key(k): v for k, v in body.items() if k != "step"}, step=int(body["step"]))

    def finish(self, saes: list[SAEConfig], *, completed: bool) -> None:
        """Close these SAEs' runs; ``completed``: their checkpoints are final, so record the final
        metrics in the summary (and log the artifact when asked)."""
        for sae in saes:
            run = self.runs.pop(sae.name, None)
            if run is None:
                continue
            try:
                if completed:
                    self._final(run, sae)
            finally:
                run.finish(exit_code=0 if completed else 1)

    def finish_all(self) -> None:
        """Close whatever is still open (an interrupted or failed group)."""
        for run in self.runs.values():
            run.finish(exit_code=1)
        self.runs.clear()

    def _final(self, run: Any, sae: SAEConfig) -> None:
        ckpt = self.out / sae.name
        cfg = read_cfg(ckpt)
        for k, v in (cfg.metrics or {}).items():
            if isinstance(v, int | float):
                run.summary[f"final/{k}"] = v
        run.summary["checkpoint"] = str(ckpt.resolve())
        if self.config.train.wandb_artifact:
            art = self.wandb.Artifact(_artifact_name(self.group, sae.name), type="model",
                                      metadata={"sae": sae.name, "arch": sae.arch, "d_sae": sae.d_sae,
                                                **{k: v for k, v in (cfg.metrics or {}).items()
                                                   if isinstance(v, int | float)}})
            art.add_file(str(ckpt / CFG_FILE), name=CFG_FILE)
            art.add_file(str(ckpt / WEIGHTS_FILE), name=WEIGHTS_FILE)
            run.log_artifact(art)
