"""200 concurrent sessions, mixed STT and TTS, while faults hit some of them: every session ends
with its summary or a documented error (its event and close code, docs/edge.md), none hangs,
and the gateways keep serving (issue 7).

Raw WebSockets (aiohttp), so each fault is exactly what a broken client does: a client that
vanishes mid-stream (TCP reset, no close frame), text that is not JSON, an unknown message,
an oversized frame, misaligned audio, audio before any config, a TTS append before its open, a
slow reader, an idle session, and the drain (SIGTERM) of a second gateway process with
sessions streaming through it. The session edge (``edge``, in this process) takes most of
them; the second process (idle timeout 3 s, drain grace 1 s) takes the idle and draining ones.
``bench_stt``/``bench_tts`` keep the model out of the way; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from inference_adapter.server import AdapterServer
from tests.helpers.edge import Edge
from tests.helpers.gateway_process import GatewayProcess, start_gateway, write_config
from voxwire import errors

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(90)]

STT_QUERY = "model=bench_stt&encoding=pcm_s16le&sample_rate=16000&interim_results=true"
CHUNK = b"\0" * 3200  # 100 ms of 16 kHz PCM16
SESSION_DEADLINE_S = 40.0
TTS_CONTEXT = {
    "model": "bench_tts",
    "outputFormat": {"encoding": "AUDIO_ENCODING_PCM_S16LE", "sampleRateHz": 24000},
}


@dataclass
class Outcome:
    """How one session ended, as its client saw it."""

    kinds: list[str] = field(default_factory=list)  # server message kinds, in order
    reasons: list[str] = field(default_factory=list)  # error / contextError reasons
    close_code: int | None = None
    audio_frames: int = 0
    vanished: bool = False
    started: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def last(self) -> str:
        return self.kinds[-1] if self.kinds else ""


def _kind(message: dict[str, object]) -> str:
    keys = [k for k in message if k not in ("ack", "contextId")]
    return keys[0] if keys else "ack"


async def _read_all(ws: aiohttp.ClientWebSocketResponse, out: Outcome, pause_s: float = 0.0):
    """Read until the server closes (a slow reader first sleeps ``pause_s``)."""
    if pause_s:
        await asyncio.sleep(pause_s)
    async for message in ws:
        if message.type is aiohttp.WSMsgType.BINARY:
            out.audio_frames += 1
        elif message.type is aiohttp.WSMsgType.TEXT:
            data = json.loads(message.data)
            kind = _kind(data)
            out.kinds.append(kind)
            if kind == "started":
                out.started.set()
            if kind in ("error", "contextError"):
                body = data[kind]
                out.reasons.append(str((body.get("error") or body).get("reason")))
    out.close_code = ws.close_code


Script = Callable[[aiohttp.ClientWebSocketResponse, Outcome], Awaitable[None]]


async def _session(
    http: aiohttp.ClientSession, url: str, key: str, script: Script, out: Outcome
) -> Outcome:
    try:
        async with asyncio.timeout(SESSION_DEADLINE_S):
            ws = await http.ws_connect(url, headers={"Authorization": f"Bearer {key}"})
            try:
                await script(ws, out)
            finally:
                if not out.vanished:
                    await ws.close()
    finally:
        out.ended.set()
    return out


async def _stream(ws: aiohttp.ClientWebSocketResponse, chunks: int, every_s: float = 0.05):
    for _ in range(chunks):
        await ws.send_bytes(CHUNK)
        await asyncio.sleep(every_s)


# -- the scripts: what each kind of client does ---------------------------------------------


async def stt_normal(ws: aiohttp.ClientWebSocketResponse, out: Outcome) -> None:
    reader = asyncio.create_task(_read_all(ws, out))
    await _stream(ws, 10)
    await ws.send_str('{"close": {}}')
    await reader


async def stt_slow_reader(ws: aiohttp.ClientWebSocketResponse, out: Outcome) -> None:
    reader = asyncio.create_task(_read_all(ws, out, pause_s=2.0))
    await _stream(ws, 10, every_s=0.01)
    await ws.send_str('{"close": {}}')
    await reader


async def stt_vanishes(ws: aiohttp.ClientWebSocketResponse, out: Outcome) -> None:
    await _stream(ws, random.randint(1, 8))
    out.vanished = True
    # Gone without a close frame: the TCP connection is reset under the gateway.
    transport = ws._response.connection.transport  # type: ignore[union-attr]
    assert transport is not None
    transport.abort()


def stt_sends(frame: str | bytes, *, stream_first: int = 2) -> Script:
    async def script(ws: aiohttp.ClientWebSocketResponse, out: Outcome) -> None:
        reader = asyncio.create_task(_read_all(ws, out))
        await _stream(ws, stream_first)
        await (ws.send_str(frame) if isinstance(frame, str) else ws.send_bytes(frame))
        await reader

    return script


async def stt_idle(ws: aiohttp.ClientWebSocketResponse, out: Outcome) -> None:
    await _stream(ws, 2)
    await _read_all(ws, out)  # says nothing more: the idle timeout ends it


async def stt_until_drained(ws: aiohttp.ClientWebSocketResponse, out: Outcome) -> None:
    reader = asyncio.create_task(_read_all(ws, out))
    while not reader.done():  # streams until the drain ends the session
        await ws.send_bytes(CHUNK)
        await asyncio.sleep(0.1)
    await reader


def tts(*, bad_first: bool = False) -> Script:
    async def script(ws: aiohttp.ClientWebSocketResponse, out: Outcome) -> None:
        reader = asyncio.create_task(_read_all(ws, out))
        if bad_first:  # text for a context never opened: that context fails, the rest goes on
            await ws.send_str(json.dumps({"contextId": "x", "append": {"text": "lost"}}))
        await ws.send_str(json.dumps({"contextId": "c1", "open": TTS_CONTEXT}))
        await ws.send_str(json.dumps({"contextId": "c1", "append": {"text": "Hello there."}}))
        await ws.send_str(json.dumps({"contextId": "c1", "close": {}}))
        await ws.send_str(json.dumps({"closeSession": {}}))
        await reader

    return script


# -- the test --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    name: str
    count: int
    path: str  # /v1/stt/stream?... or /v1/tts/stream?...
    script: Script
    on_second: bool = False  # on the second gateway process


def plans() -> list[Plan]:
    stt = f"/v1/stt/stream?{STT_QUERY}"
    return [
        Plan("stt", 60, stt, stt_normal),
        Plan("stt slow reader", 10, stt, stt_slow_reader),
        Plan("stt vanishes", 15, stt, stt_vanishes),
        Plan("stt not json", 8, stt, stt_sends("{not json")),
        Plan("stt unknown message", 7, stt, stt_sends('{"shout": {}}')),
        Plan("stt oversized frame", 8, stt, stt_sends(b"\0" * (80 * 1024))),
        Plan("stt misaligned audio", 7, stt, stt_sends(b"\0" * 3201)),
        Plan("stt audio before config", 5, "/v1/stt/stream", stt_sends(CHUNK, stream_first=0)),
        Plan("tts", 35, "/v1/tts/stream?lead_ms=0", tts()),
        Plan("tts append before open", 10, "/v1/tts/stream?lead_ms=0", tts(bad_first=True)),
        Plan("stt idle", 10, stt, stt_idle, on_second=True),
        Plan("stt drained", 25, stt, stt_until_drained, on_second=True),
    ]


def check(plan: Plan, out: Outcome) -> str | None:
    """None when ``out`` is what docs/edge.md promises for ``plan``; else what is wrong."""

    def error(kind: type[errors.VoxwireError]) -> bool:
        return (
            out.last == "error"
            and out.reasons[-1:] == [kind.reason]
            and out.close_code == kind.ws_close_code
        )

    ended_normally = out.last == "summary" and out.close_code == 1000
    ok = {
        "stt": ended_normally and "result" in out.kinds,
        "stt slow reader": ended_normally and "result" in out.kinds,
        "stt vanishes": out.vanished,
        "stt not json": error(errors.InvalidMessage),
        "stt unknown message": error(errors.InvalidMessage),
        "stt oversized frame": error(errors.ChunkTooLarge),
        "stt misaligned audio": error(errors.MisalignedAudio),
        "stt audio before config": error(errors.ConfigRequired),
        "tts": ended_normally and out.audio_frames > 0 and "done" in out.kinds,
        "tts append before open": ended_normally
        and out.reasons == [errors.ContextNotOpen.reason]
        and out.audio_frames > 0,
        "stt idle": "notice" in out.kinds and error(errors.IdleTimeout),
        # Within the grace a session ends normally; the rest are closed with 1012 (resume).
        "stt drained": "goingAway" in out.kinds and (ended_normally or error(errors.Draining)),
    }[plan.name]
    return None if ok else f"{plan.name}: {out}"


async def _wait_empty(edge: Edge, within_s: float) -> int:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within_s):
            await edge.server.registry.wait_empty()
    return len(edge.server.registry)


async def _either(a: asyncio.Event, b: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def test_200_sessions_under_mixed_faults_each_end_as_documented(
    edge: Edge, edge_adapter: AdapterServer, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "second.toml",
        edge,
        edge_adapter.address,
        drain_grace_s=1.0,
        tables={"stt": {"idle_timeout_s": 3.0, "idle_warning_s": 1.0}},
    )
    second: GatewayProcess = await start_gateway(config, tmp_path / "second.log")
    random.seed(7)
    all_plans = plans()
    assert sum(p.count for p in all_plans) == 200
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            order = [plan for plan in all_plans for _ in range(plan.count)]
            random.shuffle(order)
            jobs: list[tuple[Plan, Outcome, asyncio.Task[Outcome]]] = []
            for plan in order:
                base = second.ws if plan.on_second else edge.ws
                out = Outcome()
                job = _session(http, base + plan.path, edge.key, plan.script, out)
                jobs.append((plan, out, asyncio.create_task(job)))
            # The drain comes once the second gateway's idle sessions have timed out and while
            # every session to be drained is streaming.
            async with asyncio.timeout(SESSION_DEADLINE_S):
                for plan, out, _ in jobs:
                    if plan.name == "stt idle":
                        await out.ended.wait()
                    elif plan.name == "stt drained":
                        await _either(out.started, out.ended)
            second.signal(signal.SIGTERM)
            results = await asyncio.gather(*(task for *_, task in jobs), return_exceptions=True)
        failures = [
            f"{plan.name}: {result!r}" if isinstance(result, BaseException) else check(plan, result)
            for (plan, *_), result in zip(jobs, results, strict=True)
        ]
        wrong = [f for f in failures if f is not None]
        assert not wrong, f"{len(wrong)} of 200 not as documented: {wrong[:5]}"
        drained = Counter(
            r.close_code
            for (plan, *_), r in zip(jobs, results, strict=True)
            if plan.name == "stt drained" and isinstance(r, Outcome)
        )
        assert drained[errors.Draining.ws_close_code] > 0, drained  # the drain did cut some
        assert await second.wait(15.0) == 0, second.log()
        # Nothing is left behind (vanished clients included), and the gateway serves on.
        assert await _wait_empty(edge, 10.0) == 0
        async with aiohttp.ClientSession() as http:
            url = f"{edge.ws}/v1/stt/stream?{STT_QUERY}"
            after = await _session(http, url, edge.key, stt_normal, Outcome())
        assert check(plans()[0], after) is None
    finally:
        await second.stop()
