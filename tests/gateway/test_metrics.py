"""GET /metrics tells the truth about every edge session and every failover inside the gateway.

Real sessions through the real gateway (WebSocket STT and TTS, the gRPC front), read back by
scraping its Prometheus endpoint over HTTP: the active gauge while a session is open, then the
ended counter (by kind and close code) and the duration histogram once it is closed; and the
failover counter when the adapter serving a session is SIGKILLed (the two-adapter ``fleet`` of
tests/gateway/test_adapter_failover.py). The session's gateway is shared by every test, so each
assertion is on a difference between two scrapes.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.conftest import Edge, InstrumentedEdge
from tests.gateway.test_adapter_failover import (
    FIXTURE,
    TTS_TEXT,
    Fleet,
    fleet,  # noqa: F401 (the fixture)
    front_call,
    stt_session,
)
from tests.gateway.test_auth_end_to_end import every_wire
from tests.helpers.edge_clients import http_tts
from tests.helpers.front import bearer
from tests.helpers.speech_fixtures import SPEECH_DIR
from tests.helpers.wavio import read_wav
from voxwire.v1 import audio_pb2, synthesis_pb2, synthesis_pb2_grpc, transcription_pb2

pytestmark = pytest.mark.asyncio(loop_scope="session")

STT_QUERY = "model=stt_pocketsphinx&encoding=pcm_s16le&sample_rate=16000"
TTS_OPEN = {
    "contextId": "c1",
    "open": {
        "model": "tts_espeak",
        "outputFormat": {"encoding": "AUDIO_ENCODING_PCM_S16LE", "sampleRateHz": 22050},
    },
}
ACTIVE = "voxwire_gateway_sessions_active"
ENDED = "voxwire_gateway_sessions_ended_total"
SECONDS = "voxwire_gateway_session_seconds_count"
SECONDS_SUM = "voxwire_gateway_session_seconds_sum"
FAILOVERS = "voxwire_gateway_failovers_total"
REFUSED = "voxwire_gateway_refused_total"


class Scrape:
    """One GET /metrics, parsed with prometheus_client's own parser."""

    def __init__(self, text: str) -> None:
        self.samples = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def __call__(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def label_values(self, name: str, label: str) -> set[str]:
        return {dict(k)[label] for n, k in self.samples if n == name and label in dict(k)}


async def scrape(url: str) -> Scrape:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/metrics") as resp:
            assert resp.status == 200
            return Scrape(await resp.text())


async def settled(url: str, kind: str, active: float, within_s: float = 5.0) -> Scrape:
    """The first scrape where ``kind``'s gauge is back to ``active``: the gateway counts a
    session's end when its handler returns, just after the client has seen the close."""
    deadline = time.monotonic() + within_s
    while (now := await scrape(url))(ACTIVE, kind=kind) != active:
        assert time.monotonic() < deadline, (kind, now(ACTIVE, kind=kind), active)
        await asyncio.sleep(0.05)
    return now


def assert_ended_once(before: Scrape, after: Scrape, kind: str, code: str) -> None:
    assert after(ENDED, kind=kind, code=code) == before(ENDED, kind=kind, code=code) + 1
    assert after(SECONDS, kind=kind) == before(SECONDS, kind=kind) + 1
    assert after(SECONDS_SUM, kind=kind) > before(SECONDS_SUM, kind=kind)


# -- sessions ------------------------------------------------------------------------------------


async def test_a_websocket_stt_session_is_active_while_open_then_ended_and_timed(edge: Edge):
    url = edge.server.url
    pcm, _ = read_wav(SPEECH_DIR / "call_me_back.wav")
    before = await scrape(url)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(
            f"{edge.ws}/v1/stt/stream?{STT_QUERY}", headers=edge.headers
        ) as ws:
            assert "session" in json.loads((await ws.receive(timeout=10)).data)
            during = await scrape(url)
            assert during(ACTIVE, kind="stt") == before(ACTIVE, kind="stt") + 1
            await ws.send_bytes(pcm.tobytes()[: 16000 * 2])  # one second, once: per session
            await ws.send_str(json.dumps({"close": {}}))
            async with asyncio.timeout(30):
                async for _ in ws:
                    pass
            assert ws.close_code == 1000
    after = await settled(url, "stt", before(ACTIVE, kind="stt"))
    assert_ended_once(before, after, "stt", "1000")


async def test_a_websocket_tts_session_is_active_while_open_then_ended_and_timed(edge: Edge):
    url = edge.server.url
    before = await scrape(url)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(
            f"{edge.ws}/v1/tts/stream?lead_ms=0", headers=edge.headers
        ) as ws:
            await ws.send_str(json.dumps(TTS_OPEN))
            assert "session" in json.loads((await ws.receive(timeout=10)).data)
            during = await scrape(url)
            assert during(ACTIVE, kind="tts") == before(ACTIVE, kind="tts") + 1
            await ws.send_str(json.dumps({"contextId": "c1", "append": {"text": "Hello."}}))
            await ws.send_str(json.dumps({"contextId": "c1", "close": {}}))
            await ws.send_str(json.dumps({"closeSession": {}}))
            async with asyncio.timeout(30):
                async for _ in ws:
                    pass
            assert ws.close_code == 1000
    after = await settled(url, "tts", before(ACTIVE, kind="tts"))
    assert_ended_once(before, after, "tts", "1000")


async def test_a_clients_own_close_code_is_counted_as_other(edge: Edge):
    """A client may close with any code from 3000 to 4999: one label value for all of them,
    so that clients cannot grow the label set."""
    url = edge.server.url
    before = await scrape(url)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(
            f"{edge.ws}/v1/stt/stream?{STT_QUERY}", headers=edge.headers
        ) as ws:
            assert "session" in json.loads((await ws.receive(timeout=10)).data)
            await ws.close(code=4321)
    after = await settled(url, "stt", before(ACTIVE, kind="stt"))
    assert_ended_once(before, after, "stt", "other")
    assert "4321" not in after.label_values(ENDED, "code")


async def test_a_grpc_front_session_is_counted_as_grpc(edge: Edge):
    url = edge.server.url
    before = await scrape(url)
    request = synthesis_pb2.StreamingSynthesizeRequest
    async with grpc.aio.insecure_channel(edge.server.grpc_address) as channel:
        call = synthesis_pb2_grpc.SynthesisStub(channel).StreamingSynthesize(
            metadata=bearer(edge.key), timeout=30
        )
        fmt = audio_pb2.AudioFormat(
            encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=22050
        )
        await call.write(
            request(
                context_id="c1",
                open=synthesis_pb2.SynthesisContextConfig(model="tts_espeak", output_format=fmt),
            )
        )
        assert (await call.read()).WhichOneof("response") == "opened"
        during = await scrape(url)
        assert during(ACTIVE, kind="grpc") == before(ACTIVE, kind="grpc") + 1
        await call.write(request(context_id="c1", append=synthesis_pb2.AppendText(text="Hi.")))
        await call.write(request(context_id="c1", close=synthesis_pb2.CloseContext()))
        await call.done_writing()
        while await call.read() is not grpc.aio.EOF:
            pass
        assert await call.code() == grpc.StatusCode.OK
    after = await settled(url, "grpc", before(ACTIVE, kind="grpc"))
    assert_ended_once(before, after, "grpc", "OK")


# -- failovers (an adapter SIGKILLed mid-session; one kill per fleet) ----------------------------


async def test_a_websocket_stt_failover_is_counted(fleet: Fleet):  # noqa: F811
    url = fleet.gateway.url
    before = await scrape(url)
    run = await stt_session(fleet, fault=True)
    assert run.close_code == 1000 and len(run.of("notice")) == 1, run.of("error")
    after = await settled(url, "stt", 0)
    assert after(FAILOVERS, kind="stt") == before(FAILOVERS, kind="stt") + 1
    assert_ended_once(before, after, "stt", "1000")


async def test_a_websocket_tts_failover_is_counted(fleet: Fleet):  # noqa: F811
    url = fleet.gateway.url
    before = await scrape(url)
    notices = 0
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(
            f"{fleet.ws}/v1/tts/stream?lead_ms=300", headers=fleet.headers
        ) as ws:
            await ws.send_str(json.dumps(TTS_OPEN))
            await ws.send_str(json.dumps({"contextId": "c1", "append": {"text": TTS_TEXT}}))
            frames = 0
            async with asyncio.timeout(30):
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.BINARY:
                        frames += 1
                        if frames == 8:  # mid-text: the context's upstream call is alive
                            fleet.serving().kill()
                    elif "notice" in json.loads(msg.data):
                        notices += 1
                        await ws.send_str(json.dumps({"contextId": "c1", "close": {}}))
                        await ws.send_str(json.dumps({"closeSession": {}}))
            assert ws.close_code == 1000
    assert notices == 1
    after = await settled(url, "tts", 0)
    assert after(FAILOVERS, kind="tts") == before(FAILOVERS, kind="tts") + 1
    assert_ended_once(before, after, "tts", "1000")


async def test_a_grpc_front_failover_is_counted(fleet: Fleet):  # noqa: F811
    url = fleet.gateway.url
    pcm, rate = read_wav(SPEECH_DIR / FIXTURE)
    config = transcription_pb2.TranscriptionConfig(
        model="stt_pocketsphinx",
        audio_format=audio_pb2.AudioFormat(
            encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=rate
        ),
    )
    before = await scrape(url)
    run = await front_call(fleet, config, pcm.tobytes(), fault=True)
    assert run.code == grpc.StatusCode.OK and len(run.of("notice")) == 1
    after = await settled(url, "grpc", 0)
    assert after(FAILOVERS, kind="grpc") == before(FAILOVERS, kind="grpc") + 1
    assert_ended_once(before, after, "grpc", "OK")


async def test_http_requests_are_counted_by_status_with_their_duration(edge: Edge):
    wav = (SPEECH_DIR / "pay_bill.wav").read_bytes()
    before = await scrape(edge.server.url)
    async with aiohttp.ClientSession() as http:
        for body, media, path, status in (
            (wav, "audio/wav", "/v1/stt", 200),
            (b"\x00" * 10, "text/html", "/v1/stt", 415),
            (b"Hello there.", "text/plain", "/v1/tts", 200),
        ):
            headers = {**edge.headers, "Content-Type": media}
            async with http.post(f"{edge.server.url}{path}", data=body, headers=headers) as resp:
                await resp.read()
                assert resp.status == status
    after = await scrape(edge.server.url)
    for kind, code in (("http_stt", "200"), ("http_stt", "415"), ("http_tts", "200")):
        assert after(ENDED, kind=kind, code=code) - before(ENDED, kind=kind, code=code) == 1
    assert after(SECONDS, kind="http_stt") - before(SECONDS, kind="http_stt") == 2
    assert after(SECONDS_SUM, kind="http_tts") > before(SECONDS_SUM, kind="http_tts")
    assert after(ACTIVE, kind="http_stt") == before(ACTIVE, kind="http_stt")


# -- refusals --------------------------------------------------------------------------------


async def test_a_new_session_over_the_per_minute_limit_is_refused_on_every_wire(
    front: InstrumentedEdge,
):
    # A WebSocket learns whether a session is new (counted against the minute) or a resume only
    # from its start: one refused there was counted as an STT/TTS session ended with 1013, not
    # in voxwire_gateway_refused_total (where the same refusal over HTTP and gRPC is), and
    # the log did not say "refused" for it.
    key = front.new_key("metered", max_new_sessions_per_minute=1)
    headers = {"Authorization": f"Bearer {key}"}
    assert (await http_tts(front.url, headers)).admitted  # the minute's one session
    before = await scrape(front.url)
    attempts = await every_wire(front, headers)
    assert {a.reason for a in attempts} == {"RATE_LIMITED"}, attempts
    await settled(front.url, "tts", before(ACTIVE, kind="tts"))
    after = await settled(front.url, "stt", before(ACTIVE, kind="stt"))
    refused = after(REFUSED, reason="RATE_LIMITED") - before(REFUSED, reason="RATE_LIMITED")
    assert refused == len(attempts)
    for kind in ("stt", "tts"):
        assert after(ENDED, kind=kind, code="1013") == before(ENDED, kind=kind, code="1013")
        assert after(SECONDS, kind=kind) == before(SECONDS, kind=kind)


async def test_capabilities_refusals_are_counted_like_every_other_endpoints(edge: Edge):
    # GET /v1/capabilities answered a missing or wrong key with 401 but did not count it in
    # voxwire_gateway_refused_total, where every other endpoint's refusals are (gRPC
    # GetCapabilities' among them): an operator watching refusals missed a client that
    # polled capabilities with a bad key.
    known = edge.key.split("_")[1]
    url = f"{edge.server.url}/v1/capabilities"
    before = await scrape(edge.server.url)
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": f"Bearer vx_{known}_{'A' * 43}"}):
            async with http.get(url, headers=headers) as resp:
                assert resp.status == 401
                assert json.loads(await resp.text())["error"]["reason"] == "UNAUTHENTICATED"
        async with http.get(url, headers=edge.headers) as resp:
            assert resp.status == 200  # an answer is not a refusal
    after = await scrape(edge.server.url)
    refused = after(REFUSED, reason="UNAUTHENTICATED") - before(REFUSED, reason="UNAUTHENTICATED")
    assert refused == 2


async def test_the_scrape_has_the_processs_memory_descriptors_and_collector(edge: Edge):
    # An operator reads memory per session as resident memory against sessions_active, and a
    # socket leak as open descriptors; the adapter's scrape had these and the gateway's did not.
    import os
    import resource

    now = await scrape(edge.server.url)
    rss = now("process_resident_memory_bytes")
    assert 10 * 2**20 < rss < 8 * 2**30, rss  # this process (the test runs the gateway in it)
    fds = now("process_open_fds")
    assert 0 < fds <= len(os.listdir("/proc/self/fd")) + 64, fds
    assert now("process_max_fds") == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert now("process_cpu_seconds_total") > 0
    assert now("python_gc_collections_total", generation="0") >= 0
    assert "python_info" in {name for name, _ in now.samples}
