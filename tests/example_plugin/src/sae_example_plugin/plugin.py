"""The example plugin's hooks: one component of every kind. Keep this module cheap to import —
``sae --help`` imports every plugin — so each hook imports its component only when called."""

from __future__ import annotations

from typing import Any

from sae_core import Register, hookimpl


@hookimpl
def register_datasets(register: Register) -> None:
    from sae_example_plugin.components import GaussianDataset
    from sae_example_plugin.shapes import ShapesDataset

    register("shapes", ShapesDataset, modality="image", description="Synthetic discs and squares: shapes:N")
    register("gaussian", GaussianDataset, modality="vector", description="Seeded random vectors: gaussian:N")


@hookimpl
def register_adapters(register: Register) -> None:
    from sae_example_plugin.components import MLPAdapter
    from sae_example_plugin.patches import PatchAdapter

    register("patches", PatchAdapter, modality="image")
    register("mlp", MLPAdapter, modality="vector", description="Hidden layers of a seeded random MLP.")


@hookimpl
def register_stores(register: Register) -> None:
    from sae_example_plugin.npz_store import NpzStore

    register("npz", NpzStore)


@hookimpl
def register_architectures(register: Register) -> None:
    from sae_example_plugin.signed_topk import SignedTopK

    register("signed-topk", SignedTopK)


@hookimpl
def register_analyses(register: Register) -> None:
    from sae_example_plugin.analysis import SignBalance
    from sae_example_plugin.components import DecoderNorms

    register("sign-balance", SignBalance, default=False)  # runs with `sae analyze --only sign-balance`
    register("decoder-norms", DecoderNorms)


@hookimpl
def register_exporters(register: Register) -> None:
    from sae_example_plugin.export import NpzExporter

    register("npz", NpzExporter)


@hookimpl
def register_commands(app: Any) -> None:
    @app.command("example-hello")
    def hello(name: str = "world") -> None:
        """Say hello (proves plugins can add CLI commands)."""
        print(f"hello {name} from sae-example-plugin")
