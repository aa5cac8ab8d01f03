"""The local sharded activation store (the default)."""
