"""Clients that hold a connection without finishing their request (slowloris): the gateway lets
go of them, authenticated or not, instead of keeping a socket (and up to ~2 MiB of buffered
headers) for them as long as they like.

A gateway of its own with short timeouts: ``keepalive_timeout_seconds`` (from the connect to a
request's headers, and between requests), the idle timeout that bounds POST /v1/tts's body and
``token_body_timeout_seconds`` that bounds POST /v1/auth/token's.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from gateway.stt.session import SttLimits
from gateway.tts.session import TtsLimits
from inference_adapter.server import AdapterServer
from tests.gateway.conftest import Edge

pytestmark = pytest.mark.asyncio(loop_scope="session")

KEEPALIVE_S = 1.0
IDLE_S = 1.0
# Longer than IDLE_S, so that the token endpoint's 408 shows which deadline it used (it used
# the TTS idle timeout, a setting of another endpoint).
TOKEN_BODY_S = 2.5


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def gateway(edge: Edge, edge_adapter: AdapterServer) -> AsyncIterator[GatewayServer]:
    server = GatewayServer(
        GatewayConfig(
            listen="127.0.0.1:0",
            grpc_listen="127.0.0.1:0",
            adapters=(edge_adapter.address,),
            auth=edge.auth,
            keepalive_timeout_seconds=KEEPALIVE_S,
            token_body_timeout_seconds=TOKEN_BODY_S,
            stt=SttLimits(idle_timeout_s=IDLE_S, idle_warning_s=0.5),
            tts=TtsLimits(idle_timeout_s=IDLE_S, idle_warning_s=0.5),
        )
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=1.0)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> tuple[float, bytes]:
    """How long until the server closed the connection, and what it sent before."""
    started = time.monotonic()
    received = b""
    async with asyncio.timeout(seconds):
        while chunk := await reader.read(65536):
            received += chunk
    return time.monotonic() - started, received


async def response_within(reader: asyncio.StreamReader, seconds: float) -> tuple[float, bytes]:
    """How long until a whole response (its head and Content-Length body) came, and it."""
    started = time.monotonic()
    async with asyncio.timeout(seconds):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        body = await reader.readexactly(length)
    return time.monotonic() - started, head + body


async def test_a_connection_that_sends_nothing_is_closed(gateway: GatewayServer):
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        waited, received = await closed_within(reader, KEEPALIVE_S + 3)
    finally:
        writer.close()
    assert received == b"" and waited < KEEPALIVE_S + 2


async def test_headers_that_never_end_are_cut_however_slowly_they_drip(gateway: GatewayServer):
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(b"GET /v1/stt/stream HTTP/1.1\r\nHost: x\r\n")

    async def drip() -> None:
        for _ in range(100):  # a header line a byte at a time, never its end
            await asyncio.sleep(0.1)
            writer.write(b"X")

    dripping = asyncio.create_task(drip())
    try:
        waited, _ = await closed_within(reader, KEEPALIVE_S + 3)
    finally:
        dripping.cancel()
        writer.close()
    assert waited < KEEPALIVE_S + 2


async def test_a_keep_alive_connection_is_closed_once_idle(gateway: GatewayServer):
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        waited, received = await closed_within(reader, KEEPALIVE_S + 3)
    finally:
        writer.close()
    assert received.startswith(b"HTTP/1.1 200") and waited < KEEPALIVE_S + 2


@pytest.mark.parametrize(
    ("path", "deadline_s"), [("/v1/auth/token", TOKEN_BODY_S), ("/v1/tts", IDLE_S)]
)
async def test_a_small_body_that_stalls_is_408_after_its_deadline_and_frees_its_slot(
    gateway: GatewayServer, edge: Edge, path: str, deadline_s: float
):
    key_id = edge.key.split("_")[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {edge.key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode()
        )
        waited, received = await response_within(reader, IDLE_S + 3)
    finally:
        writer.close()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), received
    assert json.loads(body)["error"]["reason"] == "IDLE_TIMEOUT"
    assert deadline_s - 0.1 <= waited < deadline_s + 2
    assert gateway.auth.limiter.active_sessions(key_id) == 0


# RFC 9113 3.4: the client preface, an empty SETTINGS, and the ACK of the server's SETTINGS:
# an HTTP/2 connection in good standing that opens no stream.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_SETTINGS = bytes.fromhex("000000040000000000")
H2_SETTINGS_ACK = bytes.fromhex("000000040100000000")


async def test_a_grpc_connection_that_makes_no_call_is_closed(gateway: GatewayServer):
    port = int(gateway.grpc_address.rpartition(":")[2])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(H2_PREFACE + H2_SETTINGS + H2_SETTINGS_ACK)
        waited, _ = await closed_within(reader, KEEPALIVE_S + 5)
    finally:
        writer.close()
    assert waited < KEEPALIVE_S + 4


async def test_by_default_an_idle_connection_is_not_held_for_an_hour():
    # aiohttp's own default (3630 s) would be; see GatewayConfig.keepalive_timeout_seconds.
    assert GatewayConfig().keepalive_timeout_seconds <= 120
