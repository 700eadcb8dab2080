"""``voxwire keys create|list|revoke``: manage the gateway's API keys file.

``create`` prints the new key once, on stdout alone (so ``KEY=$(voxwire keys create ...)``
works); the file keeps only its SHA-256 hash. ``list`` never shows a hash in full.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.auth.keys import ApiKey

ENV_KEYS_FILE = "VOXWIRE_KEYS_FILE"


def add_parser(subparsers: Any) -> None:
    keys = subparsers.add_parser("keys", help="create, list and revoke API keys")
    commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    file_help = f"the keys file (default: ${ENV_KEYS_FILE}, else ./voxwire-keys.toml)"

    create = commands.add_parser("create", help="create a key and print it (once)")
    create.add_argument(
        "--name", required=True, type=_name, help="what the key is for (shown by list)"
    )
    create.add_argument("--file", type=Path, help=file_help)
    create.add_argument(
        "--max-concurrent",
        type=_positive,
        metavar="N",
        help="concurrent sessions (default: the gateway's)",
    )
    create.add_argument(
        "--per-minute",
        type=_positive,
        metavar="N",
        help="new sessions per minute (default: the gateway's)",
    )
    create.add_argument(
        "--origin",
        action="extend",
        nargs="+",
        default=[],
        metavar="ORIGIN",
        help="a web origin allowed to use browser tokens of this key "
        "(https://app.example; '*' for any); repeatable",
    )
    create.set_defaults(run=_create)

    listing = commands.add_parser("list", help="list keys (ids, names, limits, revoked)")
    listing.add_argument("--file", type=Path, help=file_help)
    listing.set_defaults(run=_list)

    revoke = commands.add_parser(
        "revoke", help="revoke a key (the gateway refuses it at its next reload)"
    )
    revoke.add_argument(
        "key_id", metavar="ID", help="the key id (vx_<ID>_...; the whole key works too)"
    )
    revoke.add_argument("--file", type=Path, help=file_help)
    revoke.set_defaults(run=_revoke)


def _create(args: argparse.Namespace) -> int:
    from gateway.auth.keys import create_key
    from gateway.auth.keys_file import KeysFileError

    path = _keys_file(args)
    try:
        key, record = create_key(
            path,
            name=args.name,
            now=datetime.datetime.now(datetime.UTC),
            max_concurrent_sessions=args.max_concurrent,
            max_new_sessions_per_minute=args.per_minute,
            allowed_origins=args.origin,
        )
    except (KeysFileError, ValueError) as exc:  # ValueError: an invalid origin
        return _fail(exc)
    print(key)
    print(
        f"created key {record.key_id} ({record.name}) in {path}. This is the only time the key "
        "is shown: store it now.",
        file=sys.stderr,
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    from gateway.auth.keys import load_keys
    from gateway.auth.keys_file import KeysFileError

    try:
        keys, _ = load_keys(_keys_file(args))
    except KeysFileError as exc:
        return _fail(exc)
    rows: list[tuple[str, ...]] = [
        ("KEY ID", "NAME", "CREATED", "REVOKED", "CONCURRENT", "PER MINUTE", "ORIGINS", "HASH")
    ]
    rows += [_row(record) for record in sorted(keys.values(), key=lambda r: r.created)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from gateway.auth.keys import revoke_key
    from gateway.auth.keys_file import KeysFileError

    try:
        record, changed = revoke_key(_keys_file(args), args.key_id)
    except KeysFileError as exc:
        return _fail(exc)
    state = "revoked" if changed else "was already revoked:"
    print(f"{state} key {record.key_id} ({record.name})")
    return 0


def _row(record: ApiKey) -> tuple[str, ...]:
    return (
        record.key_id,
        record.name,
        record.created.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "yes" if record.revoked else "no",
        str(record.max_concurrent_sessions or "default"),
        str(record.max_new_sessions_per_minute or "default"),
        ",".join(record.allowed_origins) or "-",
        record.hash[: len("sha256:") + 8] + "...",  # a fingerprint, never the whole hash
    )


def _keys_file(args: argparse.Namespace) -> Path:
    if args.file is not None:
        return Path(args.file)
    from gateway.auth.config import DEFAULT_KEYS_FILE

    return Path(os.environ.get(ENV_KEYS_FILE) or DEFAULT_KEYS_FILE)


def _name(text: str) -> str:
    # The name is all that tells keys apart in `list`; an empty one is a slip (an unset
    # shell variable, say).
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def _fail(exc: Exception) -> int:
    print(f"voxwire keys: error: {exc}", file=sys.stderr)
    return 1
