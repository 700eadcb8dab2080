"""Several gateway processes on one port (``reuse_port``; docs/design/edge.md, "Several processes
on one port"): the kernel spreads connections over them, a draining process stops listening
so that its sessions resume on the others through the same URL, and without the option a
second process on a taken port fails at start instead of silently sharing it.

Which process holds a connection is read from /proc: the process whose socket is an
established connection on the shared port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from benchmarks.stack import free_port
from inference_adapter.server import AdapterServer
from tests.client.helpers import Run, fixture_pcm, stt_config
from tests.client.test_stt_resume import (
    FIXTURE,
    assert_continuous,
    assert_same_timeline,
    assert_same_words,
    baseline,  # noqa: F401 (the fixture)
    faulted_run,
)
from tests.helpers.edge import Edge
from tests.helpers.gateway_process import GatewayProcess, start_gateway, write_config
from voxwire.client import TranscriptionSession
from voxwire.v1 import capabilities_pb2, capabilities_pb2_grpc

pytestmark = pytest.mark.asyncio(loop_scope="session")

_SOCKET = re.compile(r"socket:\[(\d+)\]")


def connections(pid: int, port: int) -> int:
    """Established TCP connections of process ``pid`` whose local port is ``port``."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            if match := _SOCKET.fullmatch(os.readlink(f"/proc/{pid}/fd/{fd}")):
                inodes.add(match.group(1))
    count = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):  # gRPC core's sockets are AF_INET6
        with open(path) as table:
            next(table)
            for line in table:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == "01" and fields[9] in inodes:
                    count += 1
    return count


async def held_by(processes: tuple[GatewayProcess, ...], port: int) -> dict[int, int]:
    return {p.pid: await asyncio.to_thread(connections, p.pid, port) for p in processes}


@pytest_asyncio.fixture(loop_scope="session")
async def shared(
    edge: Edge, edge_adapter: AdapterServer, tmp_path: Path
) -> AsyncIterator[tuple[GatewayProcess, GatewayProcess, int, int]]:
    """Gateways A and B on the same WebSocket/HTTP and gRPC ports, drain grace 1 s."""
    port, grpc_port = free_port(), free_port()
    config = write_config(
        tmp_path / "gateway.toml",
        edge,
        edge_adapter.address,
        drain_grace_s=1.0,
        tables={
            "listen": f"127.0.0.1:{port}",
            "grpc_listen": f"127.0.0.1:{grpc_port}",
            "reuse_port": True,
        },
    )
    ready: list[GatewayProcess] = []
    try:
        for name in ("a", "b"):
            ready.append(await start_gateway(config, tmp_path / f"{name}.log"))
        assert ready[0].port == ready[1].port == port
        yield ready[0], ready[1], port, grpc_port
    finally:
        await asyncio.gather(*(g.stop() for g in ready))


async def test_connections_spread_over_the_processes_sharing_the_ports(edge: Edge, shared):
    a, b, port, grpc_port = shared
    n = 16  # all on one process by chance: 2 ** -15
    # Sessions held open, not streaming: bench_stt, since stt_pocketsphinx admits the 4
    # real-time streams its instances keep up with (voxwire.max_streams_per_instance).
    config = stt_config(model="bench_stt")
    sessions = []
    try:
        async with asyncio.timeout(30):
            for _ in range(n):
                sessions.append(await TranscriptionSession.connect(a.ws, config, api_key=edge.key))
            held = await held_by((a, b), port)
        assert sum(held.values()) == n and min(held.values()) >= 1, held
    finally:
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)

    # The gRPC front too; each channel its own connection (no shared subchannel pool).
    channels = [
        grpc.aio.insecure_channel(
            f"127.0.0.1:{grpc_port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        for _ in range(n)
    ]
    try:
        metadata = (("authorization", f"Bearer {edge.key}"),)
        for channel in channels:
            caps = await capabilities_pb2_grpc.CapabilitiesStub(channel).GetCapabilities(
                capabilities_pb2.GetCapabilitiesRequest(), metadata=metadata, timeout=10
            )
            assert caps.models
        held = await held_by((a, b), grpc_port)
        assert sum(held.values()) == n and min(held.values()) >= 1, held
    finally:
        await asyncio.gather(*(c.close() for c in channels))


async def test_a_draining_process_hands_its_session_over_on_the_same_url(
    edge: Edge,
    shared,
    baseline: Run,  # noqa: F811
):
    """The SDK knows one URL. SIGTERM mid-utterance to whichever process holds the session:
    it closes its listener and sends going_away, and the SDK's resume through the same URL
    reaches the other process, with the words and timeline of a run without the fault."""
    a, b, port, _ = shared
    signalled: list[GatewayProcess] = []

    async def holder() -> GatewayProcess:
        held = await held_by((a, b), port)
        (serving,) = [p for p in (a, b) if held[p.pid]]
        signalled.append(serving)
        return serving

    # Both "URLs" are the one shared port.
    run = await faulted_run(edge, a, b, signal.SIGTERM, pick=holder)
    (drained,) = signalled
    assert await drained.wait(10.0) == 0, drained.log()
    other = b if drained is a else a
    assert other.process.returncode is None
    resumed = run.resumes[0]
    assert resumed.cause == "going_away", run.resumes
    assert_same_words(run, baseline)
    assert run.summary is not None and run.summary.audio_ms == baseline.summary.audio_ms
    audio, rate = fixture_pcm(FIXTURE)
    assert_continuous(run, len(audio) * 1000 // (rate * 2))
    assert_same_timeline(run, baseline)
    print(
        f"shared port, SIGTERM: resumed in {resumed.downtime_s * 1000:.0f} ms on the other"
        f" process, {resumed.replayed_ms} ms replayed, {len(run.resumes)} resume(s)"
    )


async def test_without_reuse_port_a_second_process_on_a_taken_port_fails(
    edge: Edge, edge_adapter: AdapterServer, tmp_path: Path
):
    port, grpc_port = free_port(), free_port()
    for listen, grpc_listen in (
        (f"127.0.0.1:{port}", "127.0.0.1:0"),
        ("127.0.0.1:0", f"127.0.0.1:{grpc_port}"),
    ):
        config = write_config(
            tmp_path / "gateway.toml",
            edge,
            edge_adapter.address,
            drain_grace_s=1.0,
            tables={"listen": listen, "grpc_listen": grpc_listen},
        )
        first = await start_gateway(config, tmp_path / "first.log")
        try:
            with pytest.raises(RuntimeError, match="not ready"):
                await start_gateway(config, tmp_path / "second.log", timeout_s=20)
        finally:
            await first.stop()
