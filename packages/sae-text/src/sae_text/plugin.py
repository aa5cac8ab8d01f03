"""The sae-text plugin: registered under the `sae` entry-point group as `text`."""

from __future__ import annotations
