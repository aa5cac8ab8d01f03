"""SAE checkpoints: one directory per SAE holding ``cfg.json``, ``sae.safetensors`` and what the
analyses write beside them.

One module per idea: :mod:`.filenames` (every file name of checkpoints, runs and analyses),
:mod:`.cfg` (the typed ``cfg.json``), :mod:`.discovery` (the checkpoints of a run directory),
:mod:`.weights` (durable safetensors), :mod:`.sae` (the :class:`SAE` inference module, torch) and
:mod:`.directory` (saving and loading a whole checkpoint). Names load on first use (PEP 562), so
``sae info`` and the viewer read configs without importing torch.
"""

from __future__ import annotations

from sae_core.lazy import lazy_names

#: public name -> the submodule that defines it
_WHERE = {
    "SAECheckpointConfig": "cfg", "read_cfg": "cfg",
    "find_checkpoints": "discovery", "is_checkpoint": "discovery",
    "load_weights": "weights", "save_weights": "weights",
    "SAE": "sae", "build_sae": "sae",
    "load_sae": "directory", "save_sae": "directory",
}
__all__, __getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
