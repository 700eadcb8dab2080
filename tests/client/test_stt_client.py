"""voxwire.client.TranscriptionSession against the real gateway, adapter and Triton."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.client.helpers import (
    ORIGIN,
    Run,
    assert_heard,
    collect,
    fixture_pcm,
    key_with_origin,
    stream,
    stt_config,
)
from tests.helpers.edge import Edge
from voxwire import errors
from voxwire.client import SessionClosed, SessionOptions, TranscriptionSession, token_fetcher
from voxwire.client.connection import Credentials
from voxwire.v1 import transcription_pb2

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_file_is_transcribed_through_the_sdk(edge: Edge):
    audio, rate = fixture_pcm("call_me_back.wav")
    run = Run()
    async with asyncio.timeout(30):
        session = await TranscriptionSession.connect(edge.ws, stt_config(rate), api_key=edge.key)
        reader = asyncio.create_task(collect(session, run))
        await stream(session, audio, rate, realtime=False)
        summary = await session.close()
        await reader
    assert_heard(run.words, "call_me_back.wav")
    assert run.events[0].__class__ is transcription_pb2.TranscriptionStarted
    assert run.events[-1] == summary
    assert summary.audio_ms == len(audio) * 1000 // (rate * 2)
    assert session.ack.finalized_through_ms > 0
    assert session.state.window.held_bytes <= len(audio)


async def test_finalize_and_update_config_are_answered_with_typed_acks(edge: Edge):
    audio, rate = fixture_pcm("call_me_back.wav")
    run = Run()
    async with asyncio.timeout(30):
        session = await TranscriptionSession.connect(edge.ws, stt_config(rate), api_key=edge.key)
        reader = asyncio.create_task(collect(session, run))
        await session.send(audio[: rate * 2])  # 1 s
        with pytest.raises(ValueError, match="reserved"):
            await session.finalize("vx-forced-1")  # the gateway's own would swallow its ack
        finalize_id = await session.finalize()
        update = transcription_pb2.UpdateTranscriptionConfig()
        update.endpointing.silence_ms = 400
        update_id = await session.update_config(update)
        await session.send(audio[rate * 2 :])
        await session.close()
        await reader
    acks = [e for e in run.events if isinstance(e, transcription_pb2.FinalizeAck)]
    assert [a.finalize_id for a in acks] == [finalize_id] and acks[0].audio_ms == 1000
    updates = [e for e in run.events if isinstance(e, transcription_pb2.UpdateConfigAck)]
    assert [(u.update_id, u.accepted) for u in updates] == [(update_id, True)]
    # The finalize cut the first second into its own final, acknowledged at 1000 ms.
    assert run.finals[0].from_finalize and run.finals[0].end_ms <= 1000


async def test_a_window_smaller_than_the_gateways_stays_bounded_with_finals_the_sdk_forces(
    edge: Edge,
):
    """With utterance ends off, nothing is acknowledged unless a final is forced, and the
    gateway forces one only before its own (larger) window fills. A 500 ms client window:
    ``send`` takes the whole file anyway, never holding more than 500 ms, because the SDK
    finalizes by itself (at three quarters of its window, or when the next piece does not
    fit); its acks are no events. Before, ``send`` waited for an ack that never came and
    raised TimeoutError (test_stt_resume_props found it)."""
    audio, rate = fixture_pcm("call_me_back.wav")
    config = stt_config(rate)
    config.endpointing.enabled = False
    window = rate  # bytes: 500 ms of PCM16
    options = SessionOptions(max_replay_ms=500, send_timeout_s=5.0)
    held: list[int] = []
    async with asyncio.timeout(30):
        session = await TranscriptionSession.connect(
            edge.ws, config, api_key=edge.key, options=options
        )
        run = Run()
        reader = asyncio.create_task(collect(session, run))

        async def watch() -> None:
            while True:
                held.append(session.state.window.held_bytes)
                await asyncio.sleep(0.002)

        watcher = asyncio.create_task(watch())
        for at in range(0, len(audio), window // 2):
            await session.send(audio[at : at + window // 2])  # 250 ms pieces, no pacing
        watcher.cancel()
        summary = await session.close()
        await reader
    assert session.state.window_bytes == window
    assert max(held) <= window
    assert not [e for e in run.events if isinstance(e, transcription_pb2.FinalizeAck)]
    # Several finals, each forced but the close's (the model's own utterance ends are off).
    assert len(run.finals) >= 3 and all(f.from_finalize for f in run.finals[:-1])
    ends = [0] + [f.end_ms for f in run.finals]
    assert all(f.start_ms >= end for f, end in zip(run.finals, ends, strict=False))
    assert summary.audio_ms == len(audio) * 1000 // (rate * 2)
    assert session.ack.finalized_through_ms >= summary.audio_ms - 20


async def test_a_browser_token_from_the_token_endpoint_opens_a_session(edge: Edge):
    key = await key_with_origin(edge, ORIGIN)
    calls = 0
    fetch = token_fetcher(edge.ws, key, origin=ORIGIN)

    async def provider() -> str:
        nonlocal calls
        calls += 1
        return await fetch()

    audio, rate = fixture_pcm("pay_bill.wav")
    run = Run()
    async with asyncio.timeout(30):
        session = await TranscriptionSession.connect(
            edge.ws, stt_config(rate), token_provider=provider, origin=ORIGIN
        )
        reader = asyncio.create_task(collect(session, run))
        await stream(session, audio, rate, realtime=False)
        await session.close()
        await reader
    assert calls == 1
    assert_heard(run.words, "pay_bill.wav")


async def test_a_bad_key_raises_unauthenticated(edge: Edge):
    with pytest.raises(errors.Unauthenticated):
        async with asyncio.timeout(10):
            await TranscriptionSession.connect(
                edge.ws, stt_config(), api_key="vx_nosuchkey_" + "A" * 43
            )


async def test_a_forged_resume_token_raises_resume_rejected_and_starts_nothing(edge: Edge):
    session = TranscriptionSession(edge.ws, stt_config(), Credentials(api_key=edge.key))
    session.state.token = "forged.token"
    with pytest.raises(errors.ResumeRejected):
        async with asyncio.timeout(10):
            await session._start()
    assert session.state.session_id == ""  # no fresh session was opened behind our back


async def test_a_first_connect_that_reaches_no_gateway_says_so():
    # The budget-spent error was worded for a resume ("no gateway took the session back")
    # even when no session had ever come up.
    import socket

    from voxwire.client import Backoff

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))  # a port nobody listens on (bound, never listening)
        url = f"ws://127.0.0.1:{held.getsockname()[1]}"
        options = SessionOptions(backoff=Backoff(base_s=0.01, cap_s=0.02, max_attempts=3))
        with pytest.raises(errors.BackendUnavailable) as raised:
            await asyncio.wait_for(
                TranscriptionSession.connect([url], stt_config(), api_key="k", options=options),
                10,
            )
    assert str(raised.value).startswith("no gateway could be reached"), raised.value


async def test_a_gateway_that_never_answers_the_handshake_is_named_and_timed_from_connect():
    # The cause read "TimeoutError: " (empty), and the time counted from the end of the first
    # attempt: "3 attempts in 30.2 s" after the caller had waited 40.3 s.
    import socket
    import time

    from voxwire.client import Backoff

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # takes the connection, never answers it
        url = f"ws://127.0.0.1:{silent.getsockname()[1]}"
        options = SessionOptions(
            connect_timeout_s=0.3,
            backoff=Backoff(base_s=0.01, cap_s=0.02, max_attempts=2, max_elapsed_s=5.0),
        )
        began = time.monotonic()
        with pytest.raises(errors.BackendUnavailable) as raised:
            await asyncio.wait_for(
                TranscriptionSession.connect([url], stt_config(), api_key="k", options=options),
                10,
            )
        waited = time.monotonic() - began
    message = str(raised.value)
    assert "no WebSocket handshake within 0.3 s (connect_timeout_s)" in message, message
    said = float(message.split(" attempts in ")[1].split(" s;")[0])
    assert said >= 0.6 and abs(said - waited) < 0.2, (said, waited)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda c: setattr(c, "model", "no_such_model"), errors.UnknownModel),
        (lambda c: setattr(c, "language", "xx-YY"), errors.InvalidConfig),
        (lambda c: setattr(c.endpointing, "silence_ms", 10**8), errors.InvalidConfig),
    ],
    ids=["model", "language", "endpointing"],
)
async def test_connect_raises_the_error_of_a_config_the_model_refuses(
    edge: Edge, change: Callable[[transcription_pb2.TranscriptionConfig], None], error: type
):
    # connect returned on the gateway's session message, before the model judged the
    # config: the error came from the first send or from close, as if the audio were wrong.
    config = stt_config()
    change(config)
    with pytest.raises(error):
        async with asyncio.timeout(10):
            await TranscriptionSession.connect(edge.ws, config, api_key=edge.key)


def _session_tasks() -> set[asyncio.Task[object]]:
    names = ("voxwire-session", "voxwire-keepalive")
    return {t for t in asyncio.all_tasks() if t.get_name() in names}


async def test_a_cancelled_connect_leaves_no_session_running(edge: Edge):
    # A caller that gives up on connect (wait_for, a cancelled task) never gets the session,
    # yet its task went on: connected, it held one of the key's concurrent sessions with
    # keepalives; unreached, it went on reconnecting.
    import socket

    before = _session_tasks()
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))  # bound, never listening: refused
        unreached = f"ws://127.0.0.1:{held.getsockname()[1]}"
        for url in (edge.ws, unreached):
            connecting = asyncio.create_task(
                TranscriptionSession.connect(url, stt_config(), api_key=edge.key)
            )
            for _ in range(100):  # until the session's loop has started
                if _session_tasks() - before:
                    break
                await asyncio.sleep(0)
            connecting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await connecting
            await asyncio.sleep(0.3)
            assert _session_tasks() <= before, url


async def test_a_url_that_names_the_endpoint_works_and_a_wrong_path_says_what_is_wrong(
    edge: Edge,
):
    # docs/edge.md writes ws://host:8080/v1/stt/stream; given that, the SDK added its path a
    # second time and raised InvalidMessage "handshake answered 404" (nothing the caller sent
    # was invalid).
    audio, rate = fixture_pcm("pay_bill.wav")
    async with asyncio.timeout(30):
        session = await TranscriptionSession.connect(
            edge.ws + "/v1/stt/stream/", stt_config(rate), api_key=edge.key
        )
        await session.send(audio[: rate * 2])
        assert (await session.close()).audio_ms == 1000
        with pytest.raises(errors.UnknownEndpoint, match="ws\\(s\\)://host:port"):
            await TranscriptionSession.connect(
                edge.ws + "/v1/tts/stream", stt_config(rate), api_key=edge.key
            )


async def test_a_send_waiting_for_room_when_close_comes_raises_and_sends_nothing_after_it(
    edge: Edge,
):
    # A microphone task's send waited for room in the window while another task closed the
    # session: the ack of the close's final made room, the rest of the audio went out after
    # the close (discarded by the gateway, unread), and send returned as if all had gone.
    audio, rate = fixture_pcm("call_me_back.wav")
    config = stt_config(rate)
    config.endpointing.enabled = False  # nothing acknowledged before the finalize
    options = SessionOptions(max_replay_ms=500, send_timeout_s=10.0)
    async with asyncio.timeout(30):
        session = await TranscriptionSession.connect(
            edge.ws, config, api_key=edge.key, options=options
        )
        reader = asyncio.create_task(collect(session, Run()))
        sending = asyncio.create_task(session.send(audio[: rate * 2]))  # 1 s: half fits
        for _ in range(500):  # until the window is full (the first half written)
            if not session.state.room():
                break
            await asyncio.sleep(0.01)
        await session.finalize()
        summary = await session.close()
        with pytest.raises(SessionClosed, match="16000 of its 32000 bytes were sent"):
            await sending
        await reader
    assert summary.audio_ms == 500
    assert session.state.frames_sent == rate // 2  # nothing went out after the close


@pytest.mark.parametrize("path", ["", "/", "/v1/stt/stream", "/v1/tts/stream/"])
async def test_capabilities_come_from_a_url_that_names_a_session_endpoint(edge: Edge, path: str):
    # Endpoints takes ws://host:port/v1/stt/stream as its gateway's; capabilities asked
    # /v1/stt/stream/v1/capabilities of it, a 404, and the CLI fitted no format to the model.
    from voxwire.client import fetch_capabilities

    caps = await fetch_capabilities(edge.ws + path, edge.key)
    assert caps.models, caps
