"""Shared code of the tests: small caches, fake hubs, reference SAEs, shared runs (not tests)."""
