"""Activation stores shipped with sae-core."""
