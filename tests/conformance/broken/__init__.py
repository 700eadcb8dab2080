"""Servers that each break one promise of the contract: the example server (examples/
minimal_server.py) with exactly one change, and the kit's cases that must fail because of it.

Each variant overrides one small method of the example's classes (``synthesis``,
``transcription``, ``endings``); ``catalogue`` lists them with their expected failures.
"""

from __future__ import annotations

from tests.conformance.broken.catalogue import VARIANTS
from tests.conformance.broken.server import Variant, serve

__all__ = ["VARIANTS", "Variant", "serve"]
