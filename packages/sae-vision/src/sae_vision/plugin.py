"""The sae-vision plugin: registered under the `sae` entry-point group as `vision`."""

from __future__ import annotations
