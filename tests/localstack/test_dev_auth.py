"""``make run``'s development key admits the demo page where the gateway serves it: on the
``--listen`` given, not only on the default 127.0.0.1:8080."""

from __future__ import annotations

from gateway.auth.keys import KeyStore
from gateway.auth.limits import KeyLimits
from gateway.auth.origins import origin_allowed
from localstack.__main__ import DEV_KEY_LIMITS, demo_origins, dev_auth


def _allowed(out, key: str) -> tuple[str, ...]:
    return KeyStore(out / "voxwire-keys.toml", KeyLimits(10, 60)).verify(key).allowed_origins


def test_the_demo_origins_follow_the_listen_address():
    assert demo_origins("127.0.0.1:18080") == ["http://127.0.0.1:18080", "http://localhost:18080"]
    assert demo_origins("0.0.0.0:9000") == ["http://127.0.0.1:9000", "http://localhost:9000"]
    assert "http://10.0.0.5:8080" in demo_origins("10.0.0.5:8080")


def test_the_dev_key_admits_the_demo_page_on_another_port(tmp_path):
    _, key = dev_auth(tmp_path, demo_origins("127.0.0.1:18080"))
    assert origin_allowed("http://127.0.0.1:18080", _allowed(tmp_path, key))
    assert origin_allowed("http://localhost:18080", _allowed(tmp_path, key))


def test_a_dev_key_is_reused_on_the_same_port_and_replaced_on_another(tmp_path):
    _, first = dev_auth(tmp_path, demo_origins("127.0.0.1:8080"))
    _, again = dev_auth(tmp_path, demo_origins("127.0.0.1:8080"))
    assert again == first
    # A run on another --listen: the first run's key would refuse its page (PERMISSION_DENIED).
    _, moved = dev_auth(tmp_path, demo_origins("127.0.0.1:18080"))
    assert moved != first
    assert origin_allowed("http://127.0.0.1:18080", _allowed(tmp_path, moved))
    assert (tmp_path / "dev.key").read_text().strip() == moved


def test_a_dev_key_sets_no_limits_and_gets_the_runs_own(tmp_path):
    # The keys file entry names no limits, so the run's AuthConfig defaults apply to a key
    # made by any earlier run: high enough for the kit through the gRPC front and a load test.
    auth, key = dev_auth(tmp_path, demo_origins("127.0.0.1:8080"))
    assert auth.default_limits() == DEV_KEY_LIMITS
    entry = KeyStore(auth.keys_file, KeyLimits(10, 60)).verify(key)
    assert (entry.max_concurrent_sessions, entry.max_new_sessions_per_minute) == (None, None)
    assert entry.limits(auth.default_limits()) == DEV_KEY_LIMITS
