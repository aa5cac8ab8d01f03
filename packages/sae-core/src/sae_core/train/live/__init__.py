"""Live training: SAEs trained on a running model's activations, without a cache.

:class:`~sae_core.train.live.source.LiveSource` implements the ActivationReader protocol over a model
adapter and a dataset, so the trainer reads it like a cache (see its module docstring for the
mixing buffer, the also-cache, validation, resume and torchrun). The module imports torch only
through :mod:`sae_core.train.live.source`; the config is light.
"""

from sae_core.train.live.options import DEFAULT_BUFFER_TOKENS, LiveConfig

__all__ = ["DEFAULT_BUFFER_TOKENS", "LiveConfig"]
