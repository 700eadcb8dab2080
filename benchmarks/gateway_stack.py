"""Gateway processes for the benchmarks: ``python -m gateway`` with a key made for the run.

The record (benchmarks/record.py), the idle-session benchmark (benchmarks/gateway_idle.py) and
the resume benchmark (benchmarks/gateway_resume.py) start gateways the way an operator does: a
TOML config, a keys file written by the same code as ``voxwire keys create``, a token signing
key shared by every process of the run (so any of them accepts another's resume tokens).
"""

from __future__ import annotations

import contextlib
import datetime
import re
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from benchmarks.stack import server_process
from gateway.auth.keys import create_key

_READY = re.compile(r"gateway ready on https?://[\d.]+:(\d+)")


@dataclass(frozen=True, slots=True)
class GatewaySetup:
    """A gateway config file and the API key it accepts."""

    config: Path
    key: str


def gateway_setup(
    folder: Path,
    adapters: Sequence[str],
    *,
    name: str = "gateway",
    max_sessions: int = 20_000,
    grpc_listen: str | None = "",
    **overrides: Any,
) -> GatewaySetup:
    """Write ``<folder>/<name>.toml`` (listen on a free loopback port, ``adapters``, the
    ``overrides`` as top-level keys or tables) and a keys file with one key whose limits the
    benchmarks never reach. Every call in one folder shares the keys file and signing key.
    The gRPC front is off (``grpc_listen = ""``: its default port is fixed, and two processes
    of a run would collide); ``grpc_listen=None`` leaves the key out, for gateways of revisions
    that predate the front."""
    folder.mkdir(parents=True, exist_ok=True)
    keys_file, secret_file, key_file = folder / "keys.toml", folder / "signing-key", folder / "key"
    if not key_file.exists():
        secret_file.write_text("hex:" + secrets.token_hex(32))
        key, _ = create_key(
            keys_file,
            name="bench",
            now=datetime.datetime.now(datetime.UTC),
            max_concurrent_sessions=max_sessions,
            max_new_sessions_per_minute=1_000_000,
        )
        key_file.write_text(key)
    key = key_file.read_text()
    config: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "adapters": list(adapters),
        "auth": {
            "keys_file": str(keys_file),
            "token_signing_keys": {"k1": secret_file.read_text()},
            "token_current_kid": "k1",
            "keys_reload_interval_s": 60.0,
        },
    }
    if grpc_listen is not None:
        config["grpc_listen"] = grpc_listen
    for key_name, value in overrides.items():
        if isinstance(value, dict):
            config.setdefault(key_name, {}).update(value)
        else:
            config[key_name] = value
    path = folder / f"{name}.toml"
    path.write_text(tomli_w.dumps(config))
    return GatewaySetup(path, key)


@contextlib.asynccontextmanager
async def gateway_process(
    setup: GatewaySetup, logfile: Path, *, log_level: str = "WARNING", source: Path | None = None
) -> AsyncIterator[tuple[Any, int]]:
    """``python -m gateway --config ...`` (from the checkout at ``source``, else this one);
    yields (process, port) once it is ready. SIGTERM (then SIGKILL) on exit. Raises
    RuntimeError when its ready line does not parse."""
    args = ["gateway", "--config", str(setup.config), "--log-level", log_level]
    async with server_process(args, logfile, True, cwd=source) as (proc, line):
        match = _READY.search(line)
        if match is None:
            raise RuntimeError(f"gateway not ready: {line!r} (log: {logfile})")
        yield proc, int(match.group(1))
