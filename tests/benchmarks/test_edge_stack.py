"""The edge stack benchmark keeps working: each candidate server starts, relays and echoes
real frames over real sockets, authenticates /idle, reads a chunked upload as it arrives; the
load client's paced run and its report work end to end. Seconds, not a measurement."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from benchmarks.edge_stack import checks, report
from benchmarks.edge_stack.common import FRAME, TOKEN
from benchmarks.edge_stack.latency import WebSocketLink, run_paced
from benchmarks.edge_stack.launch import stack_server
from benchmarks.edge_stack.server import STACKS
from benchmarks.stack import server_process

Servers = dict[str, tuple[int, int]]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def servers(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Servers]:
    """Every stack's server process, relaying to one gRPC echo: stack -> (port, pid)."""
    logdir: Path = tmp_path_factory.mktemp("edge-stack")
    async with contextlib.AsyncExitStack() as stack:
        _, echo_port = await stack.enter_async_context(
            server_process(["benchmarks.echo_server"], logdir / "echo.log", True)
        )
        upstream = f"127.0.0.1:{echo_port}"
        launched = await asyncio.gather(
            *(stack.enter_async_context(stack_server(s, upstream, 20.0, logdir)) for s in STACKS)
        )
        yield dict(zip(STACKS, launched, strict=True))


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.parametrize("stack", list(STACKS))
@pytest.mark.parametrize("route", ["relay", "echo"])
async def test_frames_come_back_unchanged(
    servers: Servers, http: aiohttp.ClientSession, stack: str, route: str
) -> None:
    port, _ = servers[stack]
    async with http.ws_connect(f"http://127.0.0.1:{port}/{route}") as ws:
        for i in range(5):
            frame = bytes([i]) + FRAME[1:]
            await ws.send_bytes(frame)
            message = await ws.receive(timeout=5)
            assert message.type is aiohttp.WSMsgType.BINARY
            assert message.data == frame


@pytest.mark.parametrize("stack", list(STACKS))
async def test_idle_needs_the_token(
    servers: Servers, http: aiohttp.ClientSession, stack: str
) -> None:
    port, _ = servers[stack]
    url = f"http://127.0.0.1:{port}/idle"
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await http.ws_connect(url, headers={"Authorization": "Bearer wrong"})
    async with http.ws_connect(url, headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        await ws.send_bytes(b"hello")
        assert (await checks.stats(http, port))["sessions"] == 1


@pytest.mark.parametrize("stack", list(STACKS))
async def test_chunked_upload_is_read_as_it_arrives(
    servers: Servers, http: aiohttp.ClientSession, stack: str
) -> None:
    port, _ = servers[stack]
    result = await checks.check_upload(http, port)
    assert result["status"] == 200
    assert result["first_chunk_seen_ms"] is not None  # seen before the rest was sent
    assert result["bytes"] == result["expected"]


async def test_paced_run_and_its_report(
    servers: Servers, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    port, pid = servers["aiohttp"]
    url = f"http://127.0.0.1:{port}/relay"
    measured = await run_paced(lambda: WebSocketLink(http, url), 2, 1.5, {"stack": lambda: [pid]})
    assert measured.stats.errors == []
    assert measured.stats.count == 2 * 5  # 15 frames per stream, the first 10 are warm-up
    assert 0 < measured.stats.p50 < 1000
    table = report.latency_table(2, {"aiohttp relay": [measured]}, ["aiohttp"])
    assert "| aiohttp relay | 1 | 10 |" in table
    saved = tmp_path / "run.json"
    saved.write_text(
        json.dumps({"header": [], "latency": {"2": {"aiohttp relay": [asdict(measured)]}}})
    )
    assert "| aiohttp relay | 1 | 10 |" in report.render(str(saved))  # --render: the same tables
