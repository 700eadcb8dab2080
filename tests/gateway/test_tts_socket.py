"""WS /v1/tts/stream end to end: contexts, binary frames, pacing, cancel, through real eSpeak."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from gateway.wire.frames import unpack
from tests.gateway.conftest import Edge

pytestmark = pytest.mark.asyncio(loop_scope="session")

OPEN = {
    "contextId": "c1",
    "open": {
        "model": "tts_espeak",
        "outputFormat": {"encoding": "AUDIO_ENCODING_PCM_S16LE", "sampleRateHz": 22050},
        "wordTimestamps": True,
    },
}
TEXT = "Hello from the voxwire gateway. This is a second sentence to speak."


async def read_to_close(ws: aiohttp.ClientWebSocketResponse, frames: list, messages: list) -> int:
    """Every audio frame and JSON message until the server closes; its close code."""
    async for msg in ws:
        if msg.type is aiohttp.WSMsgType.BINARY:
            frames.append(unpack(msg.data))
        elif msg.type is aiohttp.WSMsgType.TEXT:
            messages.append(json.loads(msg.data))
    return ws.close_code or 0


async def test_a_context_speaks_with_tiling_binary_frames_and_done(edge: Edge):
    frames, messages = [], []
    async with aiohttp.ClientSession() as http:
        url = f"{edge.ws}/v1/tts/stream?lead_ms=0"
        async with http.ws_connect(url, headers=edge.headers) as ws:
            await ws.send_str(json.dumps(OPEN))
            await ws.send_str(json.dumps({"contextId": "c1", "append": {"text": TEXT}}))
            await ws.send_str(json.dumps({"contextId": "c1", "close": {}}))
            await ws.send_str(json.dumps({"closeSession": {}}))
            code = await read_to_close(ws, frames, messages)
    assert code == 1000
    kinds = [k for m in messages for k in m if k != "contextId"]
    assert kinds[0] == "session" and kinds[1] == "opened" and kinds[-2:] == ["done", "summary"]
    limits = messages[0]["session"]["limits"]
    assert (limits["pingInterval"], limits["pongTimeout"], limits["ttsLead"]) == (
        "15s",
        "7.500s",
        "0s",
    )
    handle = next(m["opened"]["handle"] for m in messages if "opened" in m)
    assert [f.sequence_number for f in frames] == list(range(1, len(frames) + 1))
    assert all(f.handle == handle for f in frames)
    position = 0
    for frame in frames:  # tile: each chunk starts where the one before ended
        assert abs(frame.start_ms - position) <= 1
        position = frame.start_ms + len(frame.audio) * 1000 // (22050 * 2)
    done = next(m["done"] for m in messages if "done" in m)
    assert done["lastSequenceNumber"] == len(frames)
    words = [w["word"] for m in messages if "words" in m for w in m["words"]["words"]]
    assert "voxwire" in [w.lower() for w in words]


async def test_messages_after_close_session_are_discarded_and_the_context_finishes(edge: Edge):
    # A context message after closeSession used to fail the session (1008): the open
    # context lost its audio, done and the summary.
    frames, messages = [], []
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(
            f"{edge.ws}/v1/tts/stream?lead_ms=0", headers=edge.headers
        ) as ws:
            await ws.send_str(json.dumps(OPEN))
            await ws.send_str(json.dumps({"contextId": "c1", "append": {"text": TEXT}}))
            await ws.send_str(json.dumps({"closeSession": {}}))
            await ws.send_str(json.dumps({"contextId": "c1", "append": {"text": "late"}}))
            await ws.send_str(json.dumps({**OPEN, "contextId": "c2"}))
            await ws.send_str("not json")
            await ws.send_bytes(b"binary")
            code = await read_to_close(ws, frames, messages)
    assert code == 1000, messages
    assert not [m for m in messages if "error" in m or "contextError" in m], messages
    kinds = [k for m in messages for k in m if k != "contextId"]
    assert kinds[-2:] == ["done", "summary"] and frames, kinds
    assert {m.get("contextId") for m in messages if "opened" in m} == {"c1"}


async def test_paced_audio_runs_no_further_ahead_than_the_lead(edge: Edge):
    async with aiohttp.ClientSession() as http:
        url = f"{edge.ws}/v1/tts/stream?lead_ms=500"
        async with http.ws_connect(url, headers=edge.headers) as ws:
            await ws.send_str(json.dumps(OPEN))
            await ws.send_str(json.dumps({"contextId": "c1", "append": {"text": TEXT * 2}}))
            await ws.send_str(json.dumps({"contextId": "c1", "close": {}}))
            first_at = None
            ahead = []
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.BINARY:
                    frame = unpack(msg.data)
                    now = time.monotonic()
                    first_at = first_at or now
                    ahead.append(frame.start_ms - (now - first_at) * 1000)
                elif "done" in json.loads(msg.data):
                    break
            await ws.close()
    # The model is ~700x real time; unpaced, the last chunk would be seconds ahead.
    assert max(ahead) <= 500 + 150
    assert len(ahead) > 20


async def test_cancel_is_answered_at_once_naming_the_last_chunk_sent(edge: Edge):
    async with aiohttp.ClientSession() as http:
        url = f"{edge.ws}/v1/tts/stream?lead_ms=300"
        async with http.ws_connect(url, headers=edge.headers) as ws:
            await ws.send_str(json.dumps(OPEN))
            await ws.send_str(json.dumps({"contextId": "c1", "append": {"text": TEXT * 3}}))
            await ws.send_str(json.dumps({"contextId": "c1", "close": {}}))
            last_seq = 0
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.BINARY:
                    last_seq = unpack(msg.data).sequence_number
                    if last_seq == 3:
                        await ws.send_str(json.dumps({"contextId": "c1", "cancel": {}}))
                elif "cancelled" in (body := json.loads(msg.data)):
                    assert body["cancelled"].get("lastSequenceNumber", 0) == last_seq
                    break
            # Nothing for the context follows the cancel ack.
            await ws.send_str(json.dumps({"closeSession": {}}))
            rest = [m async for m in ws]
            assert not any(m.type is aiohttp.WSMsgType.BINARY for m in rest)
            assert json.loads(rest[-1].data).get("summary") is not None


@pytest.mark.parametrize(
    ("query", "field"), [("?lead_ms=20000", "lead_ms"), ("?audio=xml", "audio")]
)
async def test_bad_options_in_the_query_are_refused_at_the_upgrade(edge: Edge, query, field):
    # A lead over max_lead_ms in the query string used to be refused only when the client sent
    # its first message: a client waiting for "session" heard nothing until the idle timeout.
    messages: list = []
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{edge.ws}/v1/tts/stream{query}", headers=edge.headers) as ws:
            code = await asyncio.wait_for(read_to_close(ws, [], messages), 5)
    assert code == 1008
    assert [m["error"]["reason"] for m in messages] == ["INVALID_CONFIG"]
    # Named as the client set it (docs/edge.md): the lead was "lead", a field it never saw.
    assert [v["field"] for v in messages[0]["error"]["fieldViolations"]] == [field], messages


async def test_session_resumes_counts_every_resume_across_connections(edge: Edge):
    # SessionStarted.resumes is "how many times the session has been resumed": each
    # connection that resumes with the last token counts one more, not 1 each time.
    async with aiohttp.ClientSession() as http:
        url = f"{edge.ws}/v1/tts/stream"
        async with http.ws_connect(url, headers=edge.headers) as ws:
            await ws.send_str(json.dumps({"keepAlive": {}}))
            session = (await ws.receive_json(timeout=10))["session"]
        first = session["sessionId"]
        counts = []
        for _ in range(3):
            async with http.ws_connect(url, headers=edge.headers) as ws:
                resume = {"resume": {"resumeToken": session["resumeToken"]}}
                await ws.send_str(json.dumps({"start": resume}))
                session = (await ws.receive_json(timeout=10))["session"]
            counts.append((session["sessionId"], session.get("resumes", 0)))
    assert counts == [(first, 1), (first, 2), (first, 3)]


async def test_a_barge_in_after_done_is_unknown_context_and_the_session_goes_on(edge: Edge):
    # docs/edge.md, "Pacing, cancel, truncation": audio runs ahead of playback, so a truncate
    # often comes after done; it stops nothing and is answered UNKNOWN_CONTEXT.
    async with aiohttp.ClientSession() as http:
        url = f"{edge.ws}/v1/tts/stream?lead_ms=0"
        async with http.ws_connect(url, headers=edge.headers) as ws:
            await ws.send_str(json.dumps(OPEN))
            await ws.send_str(json.dumps({"contextId": "c1", "append": {"text": "Hi there."}}))
            await ws.send_str(json.dumps({"contextId": "c1", "close": {}}))
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT and "done" in json.loads(msg.data):
                    break
            await ws.send_str(json.dumps({"contextId": "c1", "truncate": {"playedMs": 300}}))
            answer = await ws.receive_json(timeout=10)
            await ws.send_str(json.dumps({"closeSession": {}}))
            frames: list = []
            messages: list = []
            code = await read_to_close(ws, frames, messages)
    assert answer["contextError"]["error"]["reason"] == "UNKNOWN_CONTEXT", answer
    assert code == 1000 and "summary" in messages[-1], messages


async def test_an_ssml_document_in_a_plain_context_gets_the_adapters_notice(edge: Edge):
    # docs/contract.md, "Input that does not match its declared format": the gateway passes
    # the adapter's notice on with its context, before the context's audio.
    frames, messages = [], []
    doc = '<speak>Hello <break time="1s"/> there.</speak>'
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{edge.ws}/v1/tts/stream", headers=edge.headers) as ws:
            await ws.send_str(json.dumps(OPEN))
            await ws.send_str(json.dumps({"contextId": "c1", "append": {"text": doc}}))
            await ws.send_str(json.dumps({"contextId": "c1", "close": {}}))
            await ws.send_str(json.dumps({"closeSession": {}}))
            assert await read_to_close(ws, frames, messages) == 1000
    notices = [m for m in messages if "notice" in m]
    assert len(notices) == 1 and notices[0]["contextId"] == "c1", notices
    assert notices[0]["notice"]["kind"] == "KIND_FORMAT_SUSPECT"
    assert frames and any("done" in m for m in messages)


async def _session_lead(edge: Edge, query: str, start: dict) -> tuple[str, str]:
    """The lead a session started with (``start`` sent first), and its resume token."""
    async with aiohttp.ClientSession() as http:
        url = f"{edge.ws}/v1/tts/stream{query}"
        async with http.ws_connect(url, headers=edge.headers) as ws:
            await ws.send_str(json.dumps({"start": start}))
            first = json.loads((await ws.receive(timeout=10)).data)
            await ws.send_str(json.dumps({"closeSession": {}}))
    assert "session" in first, first
    return first["session"]["limits"]["ttsLead"], first["session"]["resumeToken"]


@pytest.mark.parametrize(
    ("query", "lead", "expected"),
    [
        ("?lead_ms=1500", "3s", "3s"),
        ("?lead_ms=2000", "0.250s", "0.250s"),
        ("?lead_ms=900", "10s", "10s"),
        ("?lead_ms=1500", "0s", "0s"),
    ],
)
async def test_starts_lead_replaces_the_query_strings_whole(
    edge: Edge, query: str, lead: str, expected: str
):
    # The two were merged field by field as protobuf Durations: 1.5 s under 3 s made 3.5 s,
    # 0.9 s under 10 s made 10.9 s (refused as over the limit), and a lead of 0 was ignored.
    assert (await _session_lead(edge, query, {"lead": lead}))[0] == expected


@pytest.mark.parametrize(("lead", "expected"), [("3s", "3s"), ("0s", "0s"), (None, "1.500s")])
async def test_a_resumes_lead_replaces_the_tokens_whole(edge: Edge, lead: str | None, expected):
    _, token = await _session_lead(edge, "?lead_ms=1500", {})
    resume: dict = {"resume": {"resumeToken": token}}
    if lead is not None:
        resume["lead"] = lead
    assert (await _session_lead(edge, "", resume))[0] == expected


async def test_a_query_number_that_is_not_one_says_so_in_plain_words(edge: Edge):
    async with aiohttp.ClientSession() as http:
        url = f"{edge.ws}/v1/tts/stream?lead_ms=abc"
        async with http.ws_connect(url, headers=edge.headers) as ws:
            error = json.loads((await ws.receive(timeout=10)).data)["error"]
    assert error["reason"] == "INVALID_CONFIG", error
    [violation] = error["fieldViolations"]
    assert violation["field"] == "lead_ms", error
    assert "not a whole number" in violation["description"], error  # not Python's int() text
