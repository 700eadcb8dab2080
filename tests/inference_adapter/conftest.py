"""The adapter under test: the session fixtures ``adapter`` and ``channel`` live in
tests/conftest.py (the conformance kit's tests use them too)."""

from __future__ import annotations

from tests.conftest import TEST_LIMITS

__all__ = ["TEST_LIMITS"]
