"""Fixtures of the auth tests: a keys file written by the real writer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.auth.keys import ApiKey, KeyStore, create_key
from tests.gateway.auth.helpers import APP, CREATED, DEFAULTS


@dataclass
class KeysFixture:
    path: Path
    server_key: str  # no allowed origins, default limits
    server: ApiKey
    browser_key: str  # origin APP allowed, its own limits
    browser: ApiKey

    def store(self) -> KeyStore:
        return KeyStore(self.path, DEFAULTS)


@pytest.fixture
def keys(tmp_path: Path) -> KeysFixture:
    path = tmp_path / "keys.toml"
    server_key, server = create_key(path, name="server", now=CREATED)
    browser_key, browser = create_key(
        path,
        name="web",
        now=CREATED,
        max_concurrent_sessions=2,
        max_new_sessions_per_minute=4,
        allowed_origins=[APP],
    )
    return KeysFixture(path, server_key, server, browser_key, browser)
