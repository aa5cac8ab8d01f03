"""Example third-party sae plugin (see plugin.py)."""
