"""The sae-viewer plugin: registered under the `sae` entry-point group as `viewer`."""

from __future__ import annotations
