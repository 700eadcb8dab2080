"""The gateway tests use the session's ``edge`` and ``edge_adapter`` (tests/conftest.py)."""

from __future__ import annotations

from tests.helpers.edge import Edge, auth_config

__all__ = ["Edge", "auth_config"]
