"""AuthConfig validation and AuthServices built from it (the gateway's entry point)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.auth import AuthConfig, AuthServices
from gateway.auth.keys_file import KeysFileError
from gateway.auth.limits import KeyLimits
from tests.gateway.auth.conftest import KeysFixture
from tests.gateway.auth.helpers import APP, ManualClock

SECRET = "hex:" + "ab" * 32


def test_services_from_config_work_together(keys: KeysFixture):
    config = AuthConfig.from_mapping(
        {
            "keys_file": keys.path.name,
            "token_signing_keys": {"2025-05": SECRET},
            "token_current_kid": "2025-05",
            "default_max_concurrent_sessions": 7,
        },
        base_dir=keys.path.parent,
    )
    assert config.keys_file == keys.path
    wall, mono = ManualClock(1e9), ManualClock()
    services = AuthServices.from_config(config, wall_clock=wall, monotonic_clock=mono)
    principal = services.authenticator.authenticate_request(
        {"Authorization": f"Bearer {keys.server_key}"}
    )
    assert principal.limits == KeyLimits(7, 60)
    token = services.authenticator.issue_browser_token(principal).token
    assert services.browser_tokens.redeem(token, origin=APP, now=wall()) == keys.server.key_id
    resume = services.resume_tokens.issue(
        session_id="s", key_id=principal.key_id, kind="stt", config=b"", now=wall(), ttl_s=60
    )
    assert services.resume_tokens.verify(
        resume.token, key_id=principal.key_id, kind="stt", now=wall()
    )
    with services.limiter.admit(principal.key_id, principal.limits):
        assert services.limiter.active_sessions(principal.key_id) == 1


@pytest.mark.parametrize(
    ("table", "complaint"),
    [
        ({}, "at least one signing key"),
        ({"token_signing_keys": {"a": SECRET}, "token_current_kid": "b"}, "current_kid"),
        ({"token_signing_keys": {"a": "hex:abcd"}, "token_current_kid": "a"}, "signing_keys.a"),
        ({"token_signing_keys": {"a": SECRET}, "token_current_kid": "a", "ttl": 1}, "unknown"),
        (
            {
                "token_signing_keys": {"a": SECRET},
                "token_current_kid": "a",
                "browser_token_ttl_s": 600,
            },
            "browser_token_ttl_s",
        ),
        (
            {
                "token_signing_keys": {"a": SECRET},
                "token_current_kid": "a",
                "default_max_new_sessions_per_minute": 0,
            },
            "max_new_sessions_per_minute",
        ),
    ],
)
def test_invalid_settings_are_named(table: dict, complaint: str):
    with pytest.raises(ValueError, match=complaint):
        AuthConfig.from_mapping(table)


def test_a_missing_keys_file_stops_the_start(tmp_path: Path):
    config = AuthConfig(
        keys_file=tmp_path / "absent.toml",
        token_signing_keys={"a": SECRET},
        token_current_kid="a",
    )
    with pytest.raises(KeysFileError):
        AuthServices.from_config(config)
