"""API keys: format, hashes only in the file, constant-time verify, reload, atomic locked writes."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import threading
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.auth.keys import (
    KeyStore,
    ReloadResult,
    create_key,
    generate_key,
    hash_key,
    load_keys,
    parse_key_id,
    revoke_key,
)
from gateway.auth.keys_file import KeysFileError
from gateway.auth.limits import KeyLimits
from tests.gateway.auth.conftest import KeysFixture
from tests.gateway.auth.helpers import APP, CREATED, DEFAULTS
from voxwire.errors import Unauthenticated


def test_a_key_is_vx_id_secret_with_256_random_bits():
    key_id, key = generate_key()
    match = re.fullmatch(r"vx_([a-z0-9]{10})_([A-Za-z0-9_-]{43})", key)
    assert match is not None and match.group(1) == key_id
    assert parse_key_id(key) == key_id
    # 43 base64url characters carry 258 bits; the 32 bytes behind them differ every time.
    assert len({generate_key()[1] for _ in range(50)}) == 50


def test_the_file_holds_hashes_only(keys: KeysFixture):
    text = keys.path.read_text()
    for key in (keys.server_key, keys.browser_key):
        secret = key.split("_", 2)[2]
        assert key not in text and secret not in text
        assert f'hash = "sha256:{hashlib.sha256(key.encode()).hexdigest()}"' in text
    assert stat.S_IMODE(os.stat(keys.path).st_mode) == 0o600


def test_a_key_verifies_to_its_entry(keys: KeysFixture):
    store = keys.store()
    record = store.verify(keys.browser_key)
    assert record.key_id == keys.browser.key_id and record.name == "web"
    assert record.allowed_origins == (APP,)
    assert record.limits(DEFAULTS) == KeyLimits(2, 4)
    assert store.verify(keys.server_key).limits(DEFAULTS) == DEFAULTS


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "Bearer x",
        "vx_abc",
        "vx_abcdefghij",
        "sk_live_0123456789abcdef0123456789abcdef01234567",
        "vx_ABCDEFGHIJ_" + "a" * 43,  # upper-case id
    ],
)
def test_a_malformed_key_is_refused(keys: KeysFixture, presented: str):
    with pytest.raises(Unauthenticated, match="malformed"):
        keys.store().verify(presented)


def test_a_wrong_secret_and_an_unknown_id_are_refused(keys: KeysFixture):
    store = keys.store()
    _, other = generate_key()
    wrong_secret = f"vx_{keys.server.key_id}_{other.split('_', 2)[2]}"
    with pytest.raises(Unauthenticated, match="unknown API key"):
        store.verify(wrong_secret)
    with pytest.raises(Unauthenticated, match="unknown API key"):
        store.verify(other)
    # One character off at the end of a valid key.
    flipped = keys.server_key[:-1] + ("A" if keys.server_key[-1] != "A" else "B")
    with pytest.raises(Unauthenticated):
        store.verify(flipped)


def test_a_revoked_key_is_refused_after_the_reload(keys: KeysFixture):
    store = keys.store()
    assert store.reload_if_changed() is ReloadResult.UNCHANGED
    record, changed = revoke_key(keys.path, keys.server.key_id)
    assert changed and record.revoked
    store.verify(keys.server_key)  # the old version is in force until the reload
    assert store.reload_if_changed() is ReloadResult.RELOADED
    with pytest.raises(Unauthenticated, match="revoked"):
        store.verify(keys.server_key)
    assert store.verify(keys.browser_key).name == "web"  # the other key is untouched
    assert store.reload_if_changed() is ReloadResult.UNCHANGED
    assert revoke_key(keys.path, keys.server.key_id)[1] is False  # idempotent


def test_a_new_key_is_accepted_after_the_reload(keys: KeysFixture):
    store = keys.store()
    key, _ = create_key(keys.path, name="third", now=CREATED)
    with pytest.raises(Unauthenticated):
        store.verify(key)
    assert store.reload_if_changed() is ReloadResult.RELOADED
    assert store.verify(key).name == "third"


def test_an_edit_in_place_is_seen(keys: KeysFixture):
    store = keys.store()
    text = keys.path.read_text()
    with open(keys.path, "r+") as f:  # same inode: size and mtime tell
        f.write(text.replace('name = "web"', 'name = "web-renamed"'))
    assert store.reload_if_changed() is ReloadResult.RELOADED
    assert store.verify(keys.browser_key).name == "web-renamed"


def test_a_broken_file_keeps_the_last_good_keys(keys: KeysFixture, caplog):
    store = keys.store()
    good = keys.path.read_text()
    keys.path.write_text(good + "\n[keys.broken\n")
    with caplog.at_level(logging.ERROR, logger="gateway.auth.keys"):
        assert store.reload_if_changed() is ReloadResult.FAILED
        assert store.reload_if_changed() is ReloadResult.UNCHANGED  # the same bad version
    assert isinstance(store.last_error, KeysFileError)
    assert len([r for r in caplog.records if "last good" in r.getMessage()]) == 1
    assert store.verify(keys.server_key).name == "server"

    keys.path.unlink()
    assert store.reload_if_changed() is ReloadResult.FAILED
    assert store.verify(keys.server_key).name == "server"

    keys.path.write_text(good.replace('name = "server"', 'name = "back"'))
    assert store.reload_if_changed() is ReloadResult.RELOADED
    assert store.last_error is None
    assert store.verify(keys.server_key).name == "back"


@pytest.mark.parametrize(
    ("field", "value", "complaint"),
    [
        ("hash", '"md5:abc"', "hash"),
        ("max_concurrent_sessions", "0", "max_concurrent_sessions"),
        ("max_new_sessions_per_minute", '"lots"', "max_new_sessions_per_minute"),
        ("allowed_origins", '["https://a.example/path"]', "allowed_origins"),
        ("revoked", '"no"', "revoked"),
    ],
)
def test_an_invalid_entry_is_named(tmp_path: Path, field: str, value: str, complaint: str):
    entry = {
        "hash": f'"sha256:{"0" * 64}"',
        "name": '"x"',
        "created": "2025-05-01T12:00:00Z",
        field: value,
    }
    path = tmp_path / "keys.toml"
    path.write_text("[keys.abcd1234]\n" + "".join(f"{k} = {v}\n" for k, v in entry.items()))
    with pytest.raises(KeysFileError, match=complaint):
        load_keys(path)
    with pytest.raises(KeysFileError):
        KeyStore(path, DEFAULTS)


_VALID_BODY = f"hash = 'sha256:{'1' * 64}'\nname = 'p'\ncreated = 2026-12-07T00:00:00Z\n"


@pytest.mark.parametrize(
    "bad_entry",
    [
        f"[keys.Partner01]\n{_VALID_BODY}",
        f"[keys.abcd5678]\n{_VALID_BODY}max_concurrent_sessions = '5'\n",
    ],
)
def test_a_file_the_gateway_refuses_is_not_written_to(tmp_path: Path, bad_entry: str):
    # A hand edit broke another entry: the gateway keeps its last good keys, so a revocation
    # written there never took effect, while `voxwire keys revoke` said "revoked", status 0.
    path = tmp_path / "keys.toml"
    _, record = create_key(path, name="server", now=CREATED)
    path.write_text(path.read_text() + "\n" + bad_entry)
    before = path.read_bytes()
    for write in (
        lambda: revoke_key(path, record.key_id),
        lambda: create_key(path, name="another", now=CREATED),
    ):
        with pytest.raises(KeysFileError, match="nothing was written") as refused:
            write()
        assert str(path) in str(refused.value) and "keys." in str(refused.value)
    assert path.read_bytes() == before


def test_the_gateways_error_for_a_bad_entry_names_the_file(tmp_path: Path):
    path = tmp_path / "keys.toml"
    path.write_text(f"[keys.X]\nhash = 'sha256:{'1' * 64}'\ncreated = 2026-12-07T00:00:00Z\n")
    with pytest.raises(KeysFileError, match=re.escape(f"keys file {path}: keys.X")):
        load_keys(path)


def test_a_missing_file_does_not_load(tmp_path: Path):
    with pytest.raises(KeysFileError, match="No such file"):
        KeyStore(tmp_path / "absent.toml", DEFAULTS)


def test_writes_keep_other_entries_and_unknown_fields(tmp_path: Path):
    path = tmp_path / "keys.toml"
    path.write_text(
        "[ops]\nowner = 'team voice'\n\n"
        f"[keys.handmade]\nhash = 'sha256:{'1' * 64}'\nname = 'by hand'\n"
        "created = 2024-01-01T00:00:00Z\nnote = 'kept'\nallowed_origins = ['*']\n"
    )
    before = tomllib.loads(path.read_text())
    inode = os.stat(path).st_ino
    _, record = create_key(path, name="new", now=CREATED)
    assert os.stat(path).st_ino != inode  # replaced by rename, not rewritten in place
    revoke_key(path, record.key_id)
    after = tomllib.loads(path.read_text())
    assert after["ops"] == before["ops"]
    assert after["keys"]["handmade"] == before["keys"]["handmade"]
    assert after["keys"][record.key_id]["revoked"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.toml", "keys.toml.lock"]


def test_concurrent_creates_all_land(tmp_path: Path):
    path = tmp_path / "keys.toml"
    with ThreadPoolExecutor(max_workers=6) as pool:
        created = list(pool.map(lambda i: create_key(path, name=f"k{i}", now=CREATED), range(30)))
    store = KeyStore(path, DEFAULTS)
    assert len(store) == 30
    for key, record in created:
        assert store.verify(key).key_id == record.key_id


def test_a_reader_never_sees_a_partial_file(tmp_path: Path):
    path = tmp_path / "keys.toml"
    create_key(path, name="first", now=CREATED)
    done = threading.Event()
    failures: list[Exception] = []

    def read_until_done() -> int:
        reads = 0
        while not done.is_set():
            try:
                load_keys(path)
            except KeysFileError as exc:
                failures.append(exc)
            reads += 1
        return reads

    with ThreadPoolExecutor(max_workers=1) as pool:
        reader = pool.submit(read_until_done)
        for i in range(15):
            create_key(path, name=f"k{i}", now=CREATED, allowed_origins=[APP])
        done.set()
        assert reader.result(timeout=30) > 0
    assert failures == []
    assert len(load_keys(path)[0]) == 16


def test_hash_is_sha256_of_the_whole_key():
    assert hash_key("vx_abcd_secret") == "sha256:" + hashlib.sha256(b"vx_abcd_secret").hexdigest()
