"""API keys: their format, their hashes, the keys file's entries, and the store the gateway asks.

A key is ``vx_<key id>_<secret>``: the key id is 10 random characters of ``[a-z0-9]`` (it
names the key in the file, in logs and in limits; it is not secret), the secret is 32 bytes
from ``secrets`` in unpadded base64url (43 characters). The keys file stores
``sha256:<hex>`` of the whole key: the secret is 256-bit random, so a fast hash is enough (no
password stretching is needed against guessing), and a leaked file reveals no key.

The file (TOML)::

    [keys.k3f9a2b1c0]
    hash = "sha256:9f86d0..."
    name = "acme-prod"
    created = 2025-05-01T12:00:00Z
    revoked = false
    max_concurrent_sessions = 10          # optional: the configured default otherwise
    max_new_sessions_per_minute = 60      # optional
    allowed_origins = ["https://app.acme.example"]   # browsers; "*" admits any origin

``KeyStore`` holds the parsed file; ``reload_if_changed()`` (the gateway calls it every few
seconds) re-reads it when its inode, size or mtime changed, and keeps the last good keys when
the new version does not parse. ``create_key`` and ``revoke_key`` rewrite the file atomically
under a lock, keeping every other entry (and unknown fields) as they were.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import enum
import hashlib
import hmac
import logging
import re
import secrets
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NewType

from gateway.auth import keys_file
from gateway.auth.keys_file import FileSignature, KeysFileError
from gateway.auth.limits import KeyLimits
from gateway.auth.origins import normalize_allowed
from voxwire.errors import Unauthenticated

log = logging.getLogger(__name__)

KeyId = NewType("KeyId", str)

KEY_ID_LENGTH = 10
SECRET_BYTES = 32
_KEY_ID_ALPHABET = string.ascii_lowercase + string.digits
_KEY_ID = re.compile(r"[a-z0-9]{4,32}")
# The key id has no "_", so the first "_" after it starts the secret (base64url may hold "_").
_KEY = re.compile(r"vx_([a-z0-9]{4,32})_([A-Za-z0-9_-]{32,128})")
_HASH = re.compile(r"sha256:[0-9a-f]{64}")
# Compared against when the key id is unknown, so that both paths cost the same.
_NO_SUCH_HASH = "sha256:" + "0" * 64


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One entry of the keys file. Limits left unset (None) take the configured defaults."""

    key_id: KeyId
    name: str
    hash: str
    created: datetime.datetime
    revoked: bool
    max_concurrent_sessions: int | None
    max_new_sessions_per_minute: int | None
    allowed_origins: tuple[str, ...]

    def limits(self, defaults: KeyLimits) -> KeyLimits:
        """This key's limits, with the defaults where the file sets none."""
        return KeyLimits(
            max_concurrent_sessions=self.max_concurrent_sessions
            or defaults.max_concurrent_sessions,
            max_new_sessions_per_minute=self.max_new_sessions_per_minute
            or defaults.max_new_sessions_per_minute,
        )


def generate_key(taken: Iterable[str] = ()) -> tuple[KeyId, str]:
    """A new key id (not in ``taken``) and the whole key ``vx_<id>_<secret>``."""
    taken = set(taken)
    while True:
        key_id = "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))
        if key_id not in taken:
            break
    secret = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).rstrip(b"=").decode()
    return KeyId(key_id), f"vx_{key_id}_{secret}"


def hash_key(key: str) -> str:
    """What the keys file stores for ``key``: ``sha256:<hex>`` of its UTF-8 bytes."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_key_id(presented: str) -> KeyId:
    """The key id of a presented key.

    Raises:
        Unauthenticated: it does not have the shape of a voxwire API key.
    """
    match = _KEY.fullmatch(presented)
    if match is None:
        raise Unauthenticated("malformed API key: expected vx_<key id>_<secret>")
    return KeyId(match.group(1))


class ReloadResult(enum.Enum):
    UNCHANGED = "unchanged"
    RELOADED = "reloaded"
    FAILED = "failed"  # the last good keys stay in force; see KeyStore.last_error


class KeyStore:
    """The keys of the keys file, verified in constant time; reloads when the file changes."""

    def __init__(self, path: Path, defaults: KeyLimits) -> None:
        """Load ``path``.

        Raises:
            KeysFileError: the file is missing, unreadable or invalid (the gateway should not
                start without its keys).
        """
        self.path = path
        self.defaults = defaults
        self.last_error: KeysFileError | None = None
        self._keys, self._signature = load_keys(path)
        self._failed: FileSignature | None = None

    def verify(self, presented: str) -> ApiKey:
        """The entry of a presented API key.

        Raises:
            Unauthenticated: malformed, unknown, wrong secret, or revoked.
        """
        key_id = parse_key_id(presented)
        record = self._keys.get(key_id)
        expected = record.hash if record is not None else _NO_SUCH_HASH
        # Constant time in the secret: no byte-by-byte early exit an attacker could time.
        if not hmac.compare_digest(hash_key(presented), expected) or record is None:
            raise Unauthenticated("unknown API key")
        if record.revoked:
            raise Unauthenticated(f"API key {key_id} is revoked")
        return record

    def get(self, key_id: str) -> ApiKey | None:
        """The entry of a key id (revoked ones too), or None."""
        return self._keys.get(KeyId(key_id))

    def __len__(self) -> int:
        return len(self._keys)

    def reload_if_changed(self) -> ReloadResult:
        """Re-read the file if it changed since the last load (or the last failed attempt).

        Never raises: a file that is missing or invalid keeps the last good keys in force,
        sets ``last_error``, logs the error once per bad version and returns FAILED.
        It reads a small local file only when it changed (a stat otherwise); from an event
        loop, run it in a thread (``asyncio.to_thread``): the swap of the keys is one
        assignment, so ``verify`` on the loop sees the old or the new keys, never a mix.
        """
        try:
            signature = keys_file.stat_signature(self.path)
            if signature == self._signature:  # the loaded version (again, after a bad one)
                self._failed, self.last_error = None, None
                return ReloadResult.UNCHANGED
            if signature == self._failed:
                return ReloadResult.UNCHANGED
            keys, signature = load_keys(self.path)
        except KeysFileError as exc:
            if self.last_error is None or str(exc) != str(self.last_error):
                log.error("keeping the last good API keys: %s", exc)
            self.last_error = exc
            # Remember the bad version, so that it is not parsed (and logged) at every poll.
            with contextlib.suppress(KeysFileError):
                self._failed = keys_file.stat_signature(self.path)
            return ReloadResult.FAILED
        self._keys = keys  # one assignment: readers see the old or the new dict, never a mix
        self._signature, self._failed, self.last_error = signature, None, None
        log.info("loaded %d API keys from %s", len(keys), self.path)
        return ReloadResult.RELOADED


def load_keys(path: Path) -> tuple[dict[KeyId, ApiKey], FileSignature]:
    """Every entry of the keys file, and the signature of the version read.

    Raises:
        KeysFileError: unreadable, not TOML, or an invalid entry (named in the message).
    """
    document, signature = keys_file.read_document(path)
    return _parse_all(path, document), signature


def _parse_all(path: Path, document: Mapping[str, Any]) -> dict[KeyId, ApiKey]:
    """Raises KeysFileError naming the file and the first invalid entry."""
    entries = document.get("keys", {})
    if not isinstance(entries, Mapping):
        raise KeysFileError(f"keys file {path}: [keys] must be a table")
    try:
        return {KeyId(k): _parse_entry(k, v) for k, v in entries.items()}
    except KeysFileError as exc:
        raise KeysFileError(f"keys file {path}: {exc}") from None


def _parse_entry(key_id: str, entry: Any) -> ApiKey:
    where = f"keys.{key_id}"
    if not _KEY_ID.fullmatch(key_id):
        raise KeysFileError(f"{where}: a key id is 4 to 32 characters of [a-z0-9]")
    if not isinstance(entry, dict):
        raise KeysFileError(f"{where} must be a table")
    hash_ = entry.get("hash")
    if not isinstance(hash_, str) or not _HASH.fullmatch(hash_):
        raise KeysFileError(f"{where}.hash must be sha256:<64 lowercase hex digits>")
    name, created = entry.get("name", ""), entry.get("created")
    if not isinstance(name, str):
        raise KeysFileError(f"{where}.name must be a string")
    if not isinstance(created, datetime.datetime) or created.tzinfo is None:
        raise KeysFileError(f"{where}.created must be a date-time with an offset")
    revoked = entry.get("revoked", False)
    if not isinstance(revoked, bool):
        raise KeysFileError(f"{where}.revoked must be true or false")
    limits: list[int | None] = []
    for field in ("max_concurrent_sessions", "max_new_sessions_per_minute"):
        value = entry.get(field)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise KeysFileError(f"{where}.{field} must be a positive integer")
        limits.append(value)
    origins = entry.get("allowed_origins", [])
    if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
        raise KeysFileError(f"{where}.allowed_origins must be a list of strings")
    try:
        allowed = normalize_allowed(origins)
    except ValueError as exc:
        raise KeysFileError(f"{where}.allowed_origins: {exc}") from exc
    return ApiKey(
        key_id=KeyId(key_id),
        name=name,
        hash=hash_,
        created=created,
        revoked=revoked,
        max_concurrent_sessions=limits[0],
        max_new_sessions_per_minute=limits[1],
        allowed_origins=allowed,
    )


def create_key(
    path: Path,
    *,
    name: str,
    now: datetime.datetime,
    max_concurrent_sessions: int | None = None,
    max_new_sessions_per_minute: int | None = None,
    allowed_origins: Sequence[str] = (),
) -> tuple[str, ApiKey]:
    """Add a new key to the file (created if missing); return the key, to show once, and its
    entry. Only the hash is written.

    Raises:
        ValueError: an empty name, a limit that is not a positive integer, or an invalid
            origin.
        KeysFileError: the path is a directory, the file cannot be read or written, or holds
            an invalid entry.
    """
    if not name.strip():
        # The name is all that tells keys apart in `voxwire keys list`.
        raise ValueError("a key needs a name (what it is for), not an empty one")
    entry: dict[str, Any] = {
        "hash": "",  # first in the table; set below, once the id is drawn under the lock
        "name": name,
        "created": now.astimezone(datetime.UTC).replace(microsecond=0),
        "revoked": False,
    }
    for field, value in (
        ("max_concurrent_sessions", max_concurrent_sessions),
        ("max_new_sessions_per_minute", max_new_sessions_per_minute),
    ):
        if value is not None:
            if value < 1:
                raise ValueError(f"{field} must be a positive integer, not {value}")
            entry[field] = value
    entry["allowed_origins"] = list(normalize_allowed(allowed_origins))
    _check_file_path(path)
    with keys_file.locked(path):
        document = _read_for_update(path)
        keys = document.setdefault("keys", {})
        key_id, key = generate_key(keys)
        entry["hash"] = hash_key(key)
        keys[key_id] = entry
        record = _parse_entry(key_id, entry)
        keys_file.write_document(path, document)
    return key, record


def revoke_key(path: Path, key_id: str) -> tuple[ApiKey, bool]:
    """Mark a key revoked; return its entry and whether it was not revoked before.

    ``key_id`` may also be the whole key (``vx_<id>_<secret>``): its id is taken. The id alone
    names the entry, so the secret is not checked.

    Raises:
        KeysFileError: no such key id, the path is a directory, or the file cannot be read or
            written.
    """
    whole = _KEY.fullmatch(key_id)
    if whole is not None:
        key_id = whole.group(1)
    _check_file_path(path)
    with keys_file.locked(path):
        document = _read_for_update(path)
        entry = document.get("keys", {}).get(key_id)
        if entry is None:
            raise KeysFileError(
                f"no key {key_id!r} in {path} (give the key id that `voxwire keys list` shows)"
            )
        before = _parse_entry(key_id, entry)
        if not before.revoked:
            entry["revoked"] = True
            keys_file.write_document(path, document)
    return _parse_entry(key_id, entry), not before.revoked


def _check_file_path(path: Path) -> None:
    """Refuse a directory before taking the lock: the lock is a sibling ``<path>.lock``, which
    would otherwise be left next to a directory that can never be a keys file."""
    if path.is_dir():
        raise KeysFileError(f"keys file {path}: is a directory, not a file")


def _read_for_update(path: Path) -> dict[str, Any]:
    """The document, every entry valid. A file the gateway would refuse whole (one bad entry,
    say a hand edit) is not written to: a revocation or a new key written there would never
    take effect, the gateway keeping its last good keys, while the command said it was done."""
    if not path.exists():
        return {}
    document, _ = keys_file.read_document(path)
    try:
        _parse_all(path, document)
    except KeysFileError as exc:
        raise KeysFileError(
            f"{exc}; the gateway does not load this file while it holds an invalid entry, so "
            "nothing was written: fix or remove that entry first"
        ) from None
    return document
