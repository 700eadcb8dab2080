"""A request that is not valid HTTP costs the gateway's log one line, not an ERROR traceback.

A real gateway process (``python -m gateway`` at INFO, as operators run it) is sent what
scanners and broken clients send a public port: a header name with a NUL, a header line over
aiohttp's limit, a Content-Length that is not a number, and a bad request pipelined after a
good one. Each is answered 400 by aiohttp's parser; the log says so in one line per request,
with no ERROR and no traceback (aiohttp logs all but a bad method on a connection's first
request with ``log_exception``: one traceback per bad request).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from inference_adapter.server import AdapterServer
from tests.gateway.conftest import Edge
from tests.helpers.gateway_process import start_gateway, write_config

pytestmark = pytest.mark.asyncio(loop_scope="session")

BAD = (
    b"GET /healthz HTTP/1.1\r\nHo\x00st: x\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
    b"POST /v1/stt HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHo\x00st: x\r\n\r\n",
)


async def test_a_bad_http_request_is_one_log_line(
    edge: Edge, edge_adapter: AdapterServer, tmp_path: Path
):
    config = write_config(tmp_path / "gw.toml", edge, edge_adapter.address, drain_grace_s=1)
    log_path = tmp_path / "gw.log"
    gateway = await start_gateway(config, log_path, log_level="INFO")
    try:
        for request in BAD:
            reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
            writer.write(request)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 10)  # aiohttp closes after a 400
            assert b"400 Bad Request" in answer, answer[:200]
            writer.close()
    finally:
        await gateway.stop()
    log = log_path.read_text(errors="replace")
    assert "Traceback" not in log, log
    assert " ERROR " not in log, log
    lines = [line for line in log.splitlines() if "bad HTTP request from 127.0.0.1" in line]
    assert len(lines) == len(BAD), log
