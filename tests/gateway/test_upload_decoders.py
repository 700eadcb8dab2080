"""POST /v1/stt's decoders are processes of their own (gateway/http/decoder_pool.py): a decoder
that dies or stalls fails its upload alone, its stderr never reaches the gateway's, and one
that finished an upload (audio or an error) takes the next."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import platform
import random
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from gateway.http.decoder_child import MEMORY_LIMIT_BYTES
from gateway.http.decoder_pool import DecoderPool, DecoderProcess
from gateway.server import GatewayServer
from inference_adapter.server import AdapterServer
from tests.gateway.conftest import Edge, InstrumentedEdge
from tests.gateway.test_http_stt import NAME, post
from tests.helpers.edge import keyed_gateway
from tests.helpers.front import wait_until
from tests.helpers.gateway_process import start_gateway, write_config
from tests.helpers.procfs import children, running
from tests.helpers.speech_fixtures import SPEECH_DIR, TRANSCRIPTS
from tests.helpers.wavio import read_wav
from tests.helpers.wer import word_error_rate

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _file(fmt: str, subtype: str, repeats: int = 1) -> bytes:
    pcm, rate = read_wav(SPEECH_DIR / NAME)
    out = io.BytesIO()
    soundfile.write(out, np.tile(pcm, repeats), rate, format=fmt, subtype=subtype)
    return out.getvalue()


def _pool(edge: Edge) -> DecoderPool:
    return edge.server.gateway.decoders


async def _held_upload(edge: Edge, data: bytes, media: str, release: asyncio.Event):
    """An upload whose second half waits for ``release``; returns (task, its decoder)."""
    import aiohttp

    async def body():
        yield data[: len(data) // 2]
        await release.wait()
        yield data[len(data) // 2 :]

    async def send() -> tuple[int, dict]:
        headers = {**edge.headers, "Content-Type": media, "Content-Length": str(len(data))}
        async with aiohttp.ClientSession() as http:
            url = f"{edge.server.url}/v1/stt?model=bench_stt"
            async with http.post(url, data=body(), headers=headers) as resp:
                return resp.status, await resp.json()

    before = set(_pool(edge).active)
    task = asyncio.create_task(send())
    for _ in range(200):
        started = _pool(edge).active - before
        if started:
            (decoder,) = started
            return task, decoder
        await asyncio.sleep(0.05)
    task.cancel()
    raise AssertionError("no decoder took the upload")


async def _failed(edge: Edge, how: str) -> float:
    """``voxwire_gateway_upload_decoders_failed_total{how=...}`` from /metrics."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{edge.server.url}/metrics") as resp:
            text = await resp.text()
    prefix = f'voxwire_gateway_upload_decoders_failed_total{{how="{how}"}} '
    (line,) = [x for x in text.splitlines() if x.startswith(prefix)]
    return float(line.split()[-1])


def _heard_long(status: int, body: dict) -> None:
    assert status == 200, body
    assert body["audioMs"] > 6 * 2800, body


def _heard(status: int, body: dict) -> None:
    assert status == 200, body
    assert word_error_rate(TRANSCRIPTS[NAME], body["transcript"]) <= 0.125, body


async def test_a_decoder_that_dies_fails_its_upload_alone(edge: Edge):
    # In the gateway's process, libsndfile's crash on a hostile file ended every session.
    crashed = await _failed(edge, "crashed")
    release = asyncio.Event()
    task, decoder = await _held_upload(edge, _file("FLAC", "PCM_16", 6), "audio/flac", release)
    try:
        os.kill(decoder.process.pid, signal.SIGKILL)
        status, body = await asyncio.wait_for(task, 20)
    finally:
        release.set()
        task.cancel()
    assert (status, body["error"]["reason"]) == (400, "INVALID_AUDIO"), body
    assert "SIGKILL" in body["error"]["message"], body
    assert await _failed(edge, "crashed") == crashed + 1  # an operator sees it
    # The gateway goes on, with a new decoder.
    _heard(*await post(edge, _file("FLAC", "PCM_16"), "audio/flac"))


async def test_a_decoder_that_stalls_with_the_whole_body_is_stopped(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("gateway.http.stt._DECODER_STALL_S", 1.0)
    stalled = await _failed(edge, "stalled")
    release = asyncio.Event()
    task, decoder = await _held_upload(edge, _file("FLAC", "PCM_16", 6), "audio/flac", release)
    try:
        os.kill(decoder.process.pid, signal.SIGSTOP)  # a decoder in an endless loop, say
        release.set()  # the whole body goes in; nothing comes out
        status, body = await asyncio.wait_for(task, 20)
    finally:
        task.cancel()
    assert (status, body["error"]["reason"]) == (400, "INVALID_AUDIO"), body
    assert "no progress" in body["error"]["message"], body
    await asyncio.wait_for(decoder.process.wait(), 10)  # killed, not left stopped
    assert await _failed(edge, "stalled") == stalled + 1
    _heard(*await post(edge, _file("OGG", "VORBIS"), "audio/ogg"))


async def test_a_decoders_stderr_is_summed_up_in_one_log_line(
    edge: Edge, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
):
    # libmpg123 writes a line to stderr for each bad frame: in the gateway's process, 2,801
    # lines for one 600 s MP3. Now the decoder's stderr is read by the gateway.
    data = bytearray(_file("MP3", "MPEG_LAYER_III"))
    rng = random.Random(1)
    for _ in range(200):
        data[rng.randrange(2000, len(data))] ^= 0xFF
    caplog.set_level(logging.WARNING, logger="gateway.http.decoder_pool")
    capfd.readouterr()
    status, body = await post(edge, bytes(data), "audio/mpeg", "?model=bench_stt")
    assert status in (200, 400), body
    for _ in range(100):  # a burst is logged after half a second of quiet
        summed = [r.getMessage() for r in caplog.records if "stderr" in r.getMessage()]
        if summed:
            break
        await asyncio.sleep(0.05)
    assert summed and "libmpg123" in summed[0], caplog.text
    assert "libmpg123" not in capfd.readouterr().err


async def _settled(pool: DecoderPool) -> None:
    """No spare decoder is starting (spare_decoders: 1, the default)."""
    await asyncio.wait_for(pool.settle(), 20)


async def test_a_decoder_is_kept_for_the_next_upload_after_audio_or_an_error(edge: Edge):
    pool = _pool(edge)
    _heard(*await post(edge, _file("FLAC", "PCM_16"), "audio/flac"))
    await _settled(pool)
    spawned = pool.spawned
    status, body = await post(edge, b"fLaC" + b"\x00" * 5000, "audio/flac")
    assert (status, body["error"]["reason"]) == (400, "INVALID_AUDIO"), body
    _heard(*await post(edge, _file("FLAC", "PCM_16"), "audio/flac"))
    _heard(*await post(edge, _file("WAV", "PCM_24"), "audio/wav"))
    assert pool.spawned == spawned  # no new process for any of them
    assert all(isinstance(d, DecoderProcess) and d.alive for d in pool._idle)


def _limits(pid: int) -> str:
    return Path(f"/proc/{pid}/limits").read_text()


async def test_a_decoders_memory_is_bounded(edge: Edge):
    # Whatever a file makes a codec allocate, past the bound the upload fails, not the host.
    release = asyncio.Event()
    task, decoder = await _held_upload(edge, _file("FLAC", "PCM_16", 6), "audio/flac", release)
    try:
        limits = _limits(decoder.process.pid)
    finally:
        release.set()
    _heard_long(*await asyncio.wait_for(task, 20))
    (line,) = [x for x in limits.splitlines() if x.startswith("Max address space")]
    assert line.split()[3:5] == [str(MEMORY_LIMIT_BYTES)] * 2, line


async def test_a_decoder_whose_client_left_is_kept_for_the_next_upload(edge: Edge):
    # Killed and restarted, a decoder costs half a second of CPU: a client that starts
    # compressed uploads and leaves them would have made the gateway pay that each time.
    pool = _pool(edge)
    release = asyncio.Event()
    task, decoder = await _held_upload(edge, _file("FLAC", "PCM_16", 6), "audio/flac", release)
    await _settled(pool)
    spawned = pool.spawned
    task.cancel()  # the client leaves half way through its body
    await asyncio.gather(task, return_exceptions=True)
    for _ in range(100):
        if not pool.active:
            break
        await asyncio.sleep(0.05)
    assert not pool.active and decoder in pool._idle and decoder.alive
    _heard(*await post(edge, _file("FLAC", "PCM_16"), "audio/flac"))
    assert pool.spawned == spawned


def _edge_of(server: GatewayServer, auth: dict[str, str]) -> Edge:
    """A test module's own gateway (``keyed_gateway``) as the helpers here take it."""
    key = auth["Authorization"].removeprefix("Bearer ")
    return Edge(server, key, Path(), server.config.auth)


async def test_a_spare_decoder_waits_for_the_first_upload(
    front: InstrumentedEdge, tmp_path_factory: pytest.TempPathFactory
):
    # A decoder takes about half a second to start: the first compressed upload after the
    # gateway's start (and the first of each burst) waited for that before its audio went to
    # the model. Now one is started ahead (spare_decoders), and another as it is taken.
    async for server, auth in keyed_gateway(
        front.adapter.address, tmp_path_factory.mktemp("spare"), "spare"
    ):
        pool = server.gateway.decoders
        await _settled(pool)
        assert (pool.spawned, pool.idle) == (1, 1)
        (spare,) = pool._idle
        own = _edge_of(server, auth)
        release = asyncio.Event()
        task, decoder = await _held_upload(own, _file("FLAC", "PCM_16", 6), "audio/flac", release)
        try:
            assert decoder is spare  # no process started for this upload
            await _settled(pool)
            assert (pool.spawned, pool.idle) == (2, 1)  # the next upload's, started meanwhile
        finally:
            release.set()
        _heard_long(*await asyncio.wait_for(task, 20))
        await _settled(pool)
        assert pool.spawned == 2 and pool.idle == 2


async def test_no_spare_decoder_when_spare_decoders_is_0(
    front: InstrumentedEdge, tmp_path_factory: pytest.TempPathFactory
):
    async for server, auth in keyed_gateway(
        front.adapter.address, tmp_path_factory.mktemp("nospare"), "nospare", spare_decoders=0
    ):
        pool = server.gateway.decoders
        own = _edge_of(server, auth)
        _heard(*await post(own, _file("FLAC", "PCM_16"), "audio/flac"))
        assert (pool.spawned, pool.idle, pool.starting) == (1, 1, False)


def _reading_stdin(pid: int) -> bool:
    """Blocked in read(0, ...) (x86-64 syscall 0; /proc/PID/syscall, proc(5)): a decoder past
    its start, waiting for an upload."""
    try:
        return Path(f"/proc/{pid}/syscall").read_text().startswith("0 0x0 ")
    except OSError:
        return False


@pytest.mark.skipif(
    platform.machine() != "x86_64" or not sys.platform.startswith("linux"),
    reason="reads Linux x86-64 syscall numbers from /proc",
)
async def test_a_decoder_ends_with_a_gateway_killed_under_it(
    edge: Edge, edge_adapter: AdapterServer, tmp_path: Path
):
    # A decoder held where it reads nothing (here: stopped) outlived its gateway's SIGKILL:
    # it would read its stdin's end only when it went on. It now gets SIGKILL with its
    # parent's end (PR_SET_PDEATHSIG), stopped or not.
    config = write_config(tmp_path / "gateway.toml", edge, edge_adapter.address, drain_grace_s=1)
    gateway = await start_gateway(config, tmp_path / "gateway.log")
    decoders: set[int] = set()
    try:
        # The spare decoder, started with the gateway, once it waits for an upload.
        assert await wait_until(lambda: bool(children(gateway.process.pid)), 20.0)
        decoders = children(gateway.process.pid)
        assert await wait_until(lambda: all(_reading_stdin(p) for p in decoders), 20.0)
        for pid in decoders:
            os.kill(pid, signal.SIGSTOP)
        gateway.signal(signal.SIGKILL)
        await gateway.wait(10.0)
        assert await wait_until(lambda: not any(running(p) for p in decoders), 5.0), decoders
    finally:
        await gateway.stop()
        for pid in decoders:  # the decoders this test stopped, if they outlived it
            if running(pid):
                os.kill(pid, signal.SIGKILL)
