"""Hook implementations. Keep this module cheap to import: heavy work lives in the factories."""

from __future__ import annotations

from typing import Any

from sae_core import hookimpl


@hookimpl
def register_adapters(register: Any) -> None:
    from sae_example_plugin.components import MLPAdapter

    register("mlp", MLPAdapter, modality="vector", description="Hidden layers of a seeded random MLP.")


@hookimpl
def register_datasets(register: Any) -> None:
    from sae_example_plugin.components import GaussianDataset

    register("gaussian", GaussianDataset, modality="vector", description="Seeded random vectors: gaussian:N")


@hookimpl
def register_analyses(register: Any) -> None:
    from sae_example_plugin.components import DecoderNorms

    register("decoder-norms", DecoderNorms)


@hookimpl
def register_commands(app: Any) -> None:
    @app.command("example-hello")
    def hello(name: str = "world") -> None:
        """Say hello (proves plugins can add CLI commands)."""
        print(f"hello {name} from sae-example-plugin")
