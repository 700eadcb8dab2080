"""Gateway processes for fault tests: ``python -m gateway`` as a child on a free loopback port.

Each process shares the session edge's keys file and token signing key (so a resume token from
one is accepted by another, as in production) and talks to the session's adapter. Only the
processes started here are signalled, by their PID; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from tests.helpers.edge import Edge

_READY = re.compile(rb"gateway ready on https?://([\d.]+):(\d+)(?: \(gRPC ([\d.]+:\d+)\))?")


@dataclass(eq=False)
class GatewayProcess:
    process: asyncio.subprocess.Process
    port: int
    log_path: Path
    grpc_address: str = ""  # host:port of its gRPC front ("" when disabled)

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, sig: signal.Signals) -> None:
        if self.process.returncode is None:
            self.process.send_signal(sig)

    async def wait(self, timeout_s: float) -> int:
        """The exit status. Raises TimeoutError."""
        async with asyncio.timeout(timeout_s):
            return await self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 5 s."""
        if self.process.returncode is not None:
            return
        self.signal(signal.SIGTERM)
        try:
            await self.wait(5.0)
        except TimeoutError:
            self.signal(signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await self.wait(5.0)


def write_config(
    path: Path,
    edge: Edge,
    adapter: str,
    *,
    drain_grace_s: float,
    tables: dict[str, object] | None = None,
) -> Path:
    """A gateway config sharing ``edge``'s keys; ``tables`` adds settings, top-level keys or
    tables (``{"reuse_port": True, "stt": {"idle_timeout_s": 3}}``)."""
    config: dict[str, object] = {
        "listen": "127.0.0.1:0",
        "grpc_listen": "127.0.0.1:0",
        "adapters": [adapter],
        "drain_grace_seconds": drain_grace_s,
        "auth": {
            "keys_file": str(edge.keys_file),
            "token_signing_keys": dict(edge.auth.token_signing_keys),
            "token_current_kid": edge.auth.token_current_kid,
            "keys_reload_interval_s": 60.0,
        },
    }
    config.update(tables or {})
    path.write_text(tomli_w.dumps(config))
    return path


async def start_gateway(
    config: Path,
    log_path: Path,
    *,
    command: tuple[str, ...] = (sys.executable, "-m", "gateway"),
    timeout_s: float = 30.0,
    log_level: str = "WARNING",
) -> GatewayProcess:
    """Start one gateway process (``command``, then its arguments) and wait for its ready line.
    Raises RuntimeError (with its log) if it exits or is not ready within ``timeout_s``."""
    log = log_path.open("wb")
    process = await asyncio.create_subprocess_exec(
        *command,
        "--config",
        str(config),
        "--log-level",
        log_level,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
    )
    log.close()
    assert process.stdout is not None
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                line = await process.stdout.readline()
                if not line:
                    raise RuntimeError("exited before it was ready")
                if match := _READY.search(line):
                    grpc_address = (match.group(3) or b"").decode()
                    return GatewayProcess(process, int(match.group(2)), log_path, grpc_address)
    except (TimeoutError, RuntimeError) as exc:
        if process.returncode is None:
            process.kill()
            await process.wait()
        log_text = await asyncio.to_thread(log_path.read_text, errors="replace")
        raise RuntimeError(f"gateway process not ready ({exc!r}): {log_text}") from exc
