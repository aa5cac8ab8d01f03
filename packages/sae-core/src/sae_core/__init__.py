"""sae-core: plugin system, activation store, SAE architectures, multi-SAE trainer, ``sae`` CLI."""

from sae_core.errors import SAEError
from sae_core.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["SAEError", "__version__", "hookimpl"]
