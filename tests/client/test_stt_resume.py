"""STT sessions survive a gateway's SIGTERM (drain) and SIGKILL: two gateway processes, the SDK
given both URLs, a real fixture streamed at real time, the gateway serving it signalled
mid-utterance (docs/design/edge.md, "Sessions that survive restarts").

Guarantee checked: the final word sequence equals a run without the fault; final results'
offsets are monotonic and continuous (each starts at or after the one before ended, within the
audio); utterance ids continue (u0, u1, ... with no repeat and no gap); the resume happened
on the other process.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable

import pytest
import pytest_asyncio

from tests.client.conftest import OPTIONS
from tests.client.helpers import Run, collect, fixture_pcm, stream, stt_config
from tests.helpers.edge import Edge
from tests.helpers.gateway_process import GatewayProcess
from tests.helpers.speech_fixtures import TRANSCRIPTS
from tests.helpers.wer import word_error_rate
from voxwire.client import TranscriptionSession
from voxwire.v1 import transcription_pb2

pytestmark = pytest.mark.asyncio(loop_scope="session")

FIXTURE = "two_sentences_gap.wav"
FAULT_AT_MS = 5000


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def baseline(edge: Edge) -> Run:
    """The same fixture through the in-process gateway, no fault, as fast as it goes."""
    audio, rate = fixture_pcm(FIXTURE)
    run = Run()
    async with asyncio.timeout(30):
        session = await TranscriptionSession.connect(edge.ws, stt_config(rate), api_key=edge.key)
        reader = asyncio.create_task(collect(session, run))
        await stream(session, audio, rate, realtime=False)
        run.summary = await session.close()
        await reader
    # The comparison that matters is with this run; the fixture's text is only a sanity check
    # (see assert_same_words on why a word may differ).
    assert word_error_rate(TRANSCRIPTS[FIXTURE], " ".join(run.words)) <= 0.3, run.words
    assert len(run.finals) >= 2
    return run


async def faulted_run(
    edge: Edge,
    serving: GatewayProcess,
    other: GatewayProcess,
    sig: signal.Signals,
    *,
    pick: Callable[[], Awaitable[GatewayProcess]] | None = None,
) -> Run:
    """Stream the fixture at real time to ``serving`` (then ``other``); at 5.0 s of audio (the
    middle of the second sentence, 4.3 to 5.9 s) send ``sig`` to ``serving`` (or to the
    process ``pick`` names then). The stream pauses there until the first utterance's final
    has come (on a loaded machine it can lag the audio), so the fault always lands
    mid-utterance with an ack to resume from."""
    audio, rate = fixture_pcm(FIXTURE)
    run = Run()
    first_final = asyncio.Event()

    async def watch() -> None:
        async for event in session.events():
            run.events.append(event)
            if isinstance(event, transcription_pb2.TranscriptResult) and event.is_final:
                first_final.set()

    async def fault(sent_bytes: int) -> None:
        if sent_bytes == FAULT_AT_MS * rate * 2 // 1000:
            async with asyncio.timeout(20):
                await first_final.wait()
            faulted_after.append(len(run.finals))
            (await pick() if pick is not None else serving).signal(sig)

    faulted_after: list[int] = []
    async with asyncio.timeout(45):
        session = await TranscriptionSession.connect(
            [serving.ws, other.ws], stt_config(rate), api_key=edge.key, options=OPTIONS
        )
        reader = asyncio.create_task(watch())
        await stream(session, audio, rate, realtime=True, after_chunk=fault)
        run.summary = await session.close()
        await reader
    assert faulted_after == [1], "the fault did not land inside the second utterance"
    return run


def assert_same_words(run: Run, baseline: Run) -> None:
    """No word lost, none repeated: the word sequences align with no insertion or deletion.

    Up to two substitutions are tolerated, and only substitutions: pocketsphinx adapts its
    cepstral mean live, and a resumed stream goes on in a new model sequence whose decoder
    starts from the band's prior rather than the mean the first one had adapted to
    (model_repository/stt_pocketsphinx/1/stt_engine.py, DecoderPool), so the same audio can
    decode to a different word ("order" / "ardor") after a fault. A lost or repeated word is an
    insertion or a deletion, which this does not forgive."""
    ops = edit_ops(baseline.words, run.words)
    assert ops["insert"] == 0 and ops["delete"] == 0, (baseline.words, run.words)
    assert ops["substitute"] <= 2, (baseline.words, run.words)


def edit_ops(reference: list[str], hypothesis: list[str]) -> dict[str, int]:
    """The operations of a minimal alignment (Levenshtein), by kind."""
    rows = len(reference) + 1
    cols = len(hypothesis) + 1
    cost = [[0] * cols for _ in range(rows)]
    for i in range(rows):
        cost[i][0] = i
    for j in range(cols):
        cost[0][j] = j
    for i in range(1, rows):
        for j in range(1, cols):
            cost[i][j] = min(
                cost[i - 1][j] + 1,
                cost[i][j - 1] + 1,
                cost[i - 1][j - 1] + (reference[i - 1] != hypothesis[j - 1]),
            )
    ops = {"insert": 0, "delete": 0, "substitute": 0}
    i, j = len(reference), len(hypothesis)
    while i or j:
        if i and j and cost[i][j] == cost[i - 1][j - 1] + (reference[i - 1] != hypothesis[j - 1]):
            ops["substitute"] += reference[i - 1] != hypothesis[j - 1]
            i, j = i - 1, j - 1
        elif i and cost[i][j] == cost[i - 1][j] + 1:
            ops["delete"] += 1
            i -= 1
        else:
            ops["insert"] += 1
            j -= 1
    return ops


def assert_continuous(run: Run, audio_ms: int) -> None:
    finals = run.finals
    ids = [f.utterance_id for f in finals]
    assert ids == [f"u{i}" for i in range(len(ids))], ids
    previous_end = 0
    for final in finals:
        assert previous_end <= final.start_ms <= final.end_ms <= audio_ms, (
            previous_end,
            final.start_ms,
            final.end_ms,
        )
        starts = [w.start_ms for w in final.words]
        assert starts == sorted(starts)
        assert all(final.start_ms <= w.start_ms <= w.end_ms <= final.end_ms for w in final.words)
        previous_end = final.end_ms


def assert_same_timeline(run: Run, baseline: Run) -> None:
    """Offsets match the unfaulted run's within a decoding frame or two (the resumed stream
    decodes the same audio from the ack on)."""
    for got, want in zip(run.finals, baseline.finals, strict=True):
        assert abs(got.start_ms - want.start_ms) <= 60, (got, want)
        assert abs(got.end_ms - want.end_ms) <= 60, (got, want)


async def test_sigterm_mid_utterance_resumes_on_the_other_gateway(
    edge: Edge, gateways: tuple[GatewayProcess, GatewayProcess], baseline: Run
):
    a, b = gateways
    run = await faulted_run(edge, a, b, signal.SIGTERM)
    # The drain ends the process on its own, promptly: the SDK left at going_away.
    assert await a.wait(10.0) == 0, a.log()
    resumed = run.resumes[0]  # (a loaded machine may add a resume on a BACKEND_UNAVAILABLE)
    assert resumed.url.startswith(b.ws) and resumed.cause == "going_away"
    assert_same_words(run, baseline)
    audio, rate = fixture_pcm(FIXTURE)
    assert run.summary is not None and run.summary.audio_ms == baseline.summary.audio_ms
    assert_continuous(run, len(audio) * 1000 // (rate * 2))
    assert_same_timeline(run, baseline)
    print(
        f"SIGTERM: resumed in {resumed.downtime_s * 1000:.0f} ms, {resumed.replayed_ms} ms replayed"
    )


async def test_sigkill_mid_utterance_resumes_from_the_last_ack(
    edge: Edge, gateways: tuple[GatewayProcess, GatewayProcess], baseline: Run
):
    a, b = gateways
    run = await faulted_run(edge, a, b, signal.SIGKILL)
    assert await a.wait(5.0) == -signal.SIGKILL
    resumed = run.resumes[0]
    assert resumed.url.startswith(b.ws) and resumed.cause == "close 1006"
    # The replay started at the ack the first utterance's final carried.
    assert resumed.replayed_ms > 0
    assert_same_words(run, baseline)
    audio, rate = fixture_pcm(FIXTURE)
    assert_continuous(run, len(audio) * 1000 // (rate * 2))
    assert_same_timeline(run, baseline)
    print(
        f"SIGKILL: resumed in {resumed.downtime_s * 1000:.0f} ms, {resumed.replayed_ms} ms replayed"
    )


async def test_resumed_names_what_ended_the_connection_not_a_failed_attempt_after_it(
    edge: Edge, gateways: tuple[GatewayProcess, GatewayProcess]
):
    # With a URL that is down between the two, Resumed.cause was the refused attempt at it
    # ("ws://...: ClientConnectorError ..."), not what its docs promise: what ended the
    # connection ("close 1006").
    import socket

    a, b = gateways
    audio, rate = fixture_pcm(FIXTURE)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))  # bound, never listening: refused
        down = f"ws://127.0.0.1:{held.getsockname()[1]}"
        async with asyncio.timeout(30):
            session = await TranscriptionSession.connect(
                [a.ws, down, b.ws], stt_config(rate), api_key=edge.key, options=OPTIONS
            )
            run = Run()
            reader = asyncio.create_task(collect(session, run))
            await session.send(audio[: rate * 2])
            a.signal(signal.SIGKILL)
            await session.send(audio[rate * 2 : rate * 4])
            await session.close()
            await reader
    assert [(r.url.startswith(b.ws), r.attempts, r.cause) for r in run.resumes] == [
        (True, 2, "close 1006")
    ]


async def test_going_away_moves_on_without_waiting_for_the_old_gateways_close(
    edge: Edge, gateways: tuple[GatewayProcess, GatewayProcess]
):
    # A path that carries nothing back from A after its goingAway (a TCP relay on loopback
    # that then drops A's bytes): the SDK's close frame reaches A, A's answer never comes
    # back. The SDK waited for that answer (up to its 2 s close timeout) before dialling B:
    # resumed after 2.06 s; now 36-97 ms (three runs).
    a, b = gateways
    relayed = await _relay_until_going_away(a.port)
    audio, rate = fixture_pcm(FIXTURE)
    try:
        async with asyncio.timeout(30):
            session = await TranscriptionSession.connect(
                [f"ws://127.0.0.1:{relayed.port}", b.ws],
                stt_config(rate),
                api_key=edge.key,
                options=OPTIONS,
            )
            run = Run()
            reader = asyncio.create_task(collect(session, run))
            await session.send(audio[: rate * 2])
            a.signal(signal.SIGTERM)
            await relayed.left.wait()  # the SDK took the goingAway (a close would not)
            await session.send(audio[rate * 2 : rate * 4])
            await session.close()
            await reader
    finally:
        relayed.close()
    assert relayed.going_away.is_set() and relayed.left.is_set()
    (resumed,) = run.resumes
    assert resumed.url.startswith(b.ws) and resumed.cause == "going_away"
    assert resumed.downtime_s < 1.5, resumed
    print(f"going_away, A's close answer dropped: resumed in {resumed.downtime_s * 1000:.0f} ms")


class _Relay:
    def __init__(self, server: asyncio.Server) -> None:
        self.server = server
        self.port = server.sockets[0].getsockname()[1]
        self.going_away = asyncio.Event()  # A's goingAway passed
        self.left = asyncio.Event()  # then the client's close frame to A

    def close(self) -> None:
        self.server.close()


async def _relay_until_going_away(upstream_port: int) -> _Relay:
    """A TCP relay to 127.0.0.1:``upstream_port`` that forwards everything the client sends,
    and the server's WebSocket frames (RFC 6455 section 5.2; unmasked, so a goingAway's JSON
    shows) up to and including the one holding a goingAway, whole; then it reads and drops
    the rest."""

    async def to_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pending = b""
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
                if relay.going_away.is_set() and not relay.left.is_set():
                    # The client's frames after it (masked: the key adds 4 bytes): a close
                    # (opcode 8) says it has taken the goingAway and is leaving.
                    pending += data
                    while (size := _frame_size(pending)) is not None and size <= len(pending):
                        if pending[0] & 0x0F == 0x8:
                            relay.left.set()
                        pending = pending[size:]
        writer.close()

    async def to_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pending = b""
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if relay.going_away.is_set():
                    continue
                pending += data
                while (size := _frame_size(pending)) is not None and size <= len(pending):
                    frame, pending = pending[:size], pending[size:]
                    writer.write(frame)
                    if b'"goingAway"' in frame:
                        relay.going_away.set()
                        break
                await writer.drain()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", upstream_port)
        upstream = asyncio.create_task(to_server(client_r, server_w))
        # The HTTP upgrade's answer passes first, whole (it ends with a blank line).
        client_w.write(await server_r.readuntil(b"\r\n\r\n"))
        await asyncio.gather(upstream, to_client(server_r, client_w))
        client_w.close()

    relay = _Relay(await asyncio.start_server(handle, "127.0.0.1", 0))
    return relay


def _frame_size(data: bytes) -> int | None:
    """The size of the frame at the start of ``data``, once its header is there."""
    if len(data) < 2:
        return None
    length, header = data[1] & 0x7F, 2
    if length == 126:
        if len(data) < 4:
            return None
        length, header = int.from_bytes(data[2:4], "big"), 4
    elif length == 127:
        if len(data) < 10:
            return None
        length, header = int.from_bytes(data[2:10], "big"), 10
    return header + length + (4 if data[1] & 0x80 else 0)
