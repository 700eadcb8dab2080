"""SttEdgeSession without any network: feed events, check what it decides."""

from __future__ import annotations

import pytest

from gateway.stt.session import State, SttEdgeSession, SttLimits
from tests.helpers.clock import Clock
from voxwire import errors
from voxwire.edge.v1 import stt_pb2
from voxwire.v1 import audio_pb2, transcription_pb2

Response = transcription_pb2.StreamingTranscribeResponse
FRAME_MS = 100
CHUNK = bytes(3200)  # 100 ms of 16 kHz PCM16


def config() -> transcription_pb2.TranscriptionConfig:
    return transcription_pb2.TranscriptionConfig(
        model="m",
        audio_format=audio_pb2.AudioFormat(
            encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=16000
        ),
    )


def new_session(clock: Clock | None = None, **limits: float) -> SttEdgeSession:
    return SttEdgeSession(
        SttLimits(**limits),  # type: ignore[arg-type]
        session_id="s1",
        issue_token=lambda cfg, *_: (f"token-{cfg.model}", 2e9),
        clock=clock or Clock(),
    )


def started() -> Response:
    return Response(started=transcription_pb2.TranscriptionStarted(session_id="up", model="m"))


def final(utterance: int, start: int, end: int, text: str = "hello") -> Response:
    return Response(
        result=transcription_pb2.TranscriptResult(
            utterance_id=f"u{utterance}", is_final=True, transcript=text, start_ms=start, end_ms=end
        )
    )


def audio_bytes(requests: list[transcription_pb2.StreamingTranscribeRequest]) -> bytes:
    return b"".join(r.audio for r in requests if r.WhichOneof("request") == "audio")


def test_audio_before_the_config_is_config_required():
    session = new_session()
    with pytest.raises(errors.ConfigRequired):
        session.client_audio(CHUNK)
    with pytest.raises(errors.ConfigRequired):
        session.client_message(stt_pb2.SttClientMessage(finalize=transcription_pb2.Finalize()))


def test_audio_sent_while_the_upstream_opens_is_written_once_it_starts():
    session = new_session()
    actions = session.start(config())
    assert actions.to_client[0].session.resume_token == "token-m"
    assert actions.open_upstream is not None and not actions.open_upstream.failover
    assert actions.open_upstream.config.stream_offset_ms == 0
    first = [bytes([i]) * 3200 for i in range(3)]
    for chunk in first:
        assert session.client_audio(chunk).to_upstream == []  # waits in the window
    finalize = stt_pb2.SttClientMessage(finalize=transcription_pb2.Finalize(finalize_id="f1"))
    session.client_message(finalize)
    session.client_audio(b"\x09" * 3200)
    actions = session.upstream_response(started())
    assert actions.to_client[0].WhichOneof("message") == "started"
    kinds = [r.WhichOneof("request") for r in actions.to_upstream]
    # The finalize stays behind the three chunks it followed and before the fourth.
    assert audio_bytes(actions.to_upstream[: kinds.index("finalize")]) == b"".join(first)
    assert actions.to_upstream[-1].audio == b"\x09" * 3200
    assert session.state is State.STREAMING
    assert session.client_audio(CHUNK).to_upstream[0].audio == CHUNK


def test_finals_and_finalize_acks_carry_the_ack():
    session = new_session()
    session.start(config())
    session.upstream_response(started())
    for _ in range(20):
        session.client_audio(CHUNK)
    msg = session.upstream_response(final(0, 200, 1300)).to_client[0]
    assert (msg.ack.finalized_through_ms, msg.ack.next_utterance_index) == (1300, 1)
    ack = Response(finalize_ack=transcription_pb2.FinalizeAck(finalize_id="f", audio_ms=2000))
    msg = session.upstream_response(ack).to_client[0]
    assert msg.WhichOneof("message") == "finalize_ack"
    assert msg.ack.finalized_through_ms == 2000 and msg.ack.next_utterance_index == 1
    assert session.window is not None and session.window.unacked_ms == 0


def test_unacknowledged_audio_near_the_window_forces_a_final_the_client_never_sees():
    session = new_session(replay_window_ms=3000, force_final_margin_ms=1000)
    session.start(config())
    session.upstream_response(started())
    forced = []
    for _ in range(25):
        forced += [
            r
            for r in session.client_audio(CHUNK).to_upstream
            if r.WhichOneof("request") == "finalize"
        ]
    assert len(forced) == 1  # one at 2 s, none again while it is pending
    fid = forced[0].finalize.finalize_id
    ack = Response(finalize_ack=transcription_pb2.FinalizeAck(finalize_id=fid, audio_ms=2000))
    out = session.upstream_response(ack).to_client
    assert len(out) == 1 and out[0].WhichOneof("message") is None
    assert out[0].ack.finalized_through_ms == 2000


def test_a_client_finalize_with_the_gateways_own_prefix_is_refused():
    """Its ack would be taken for the gateway's own forced final's and swallowed."""
    session = new_session()
    session.start(config())
    session.upstream_response(started())
    msg = stt_pb2.SttClientMessage(finalize=transcription_pb2.Finalize(finalize_id="vx-forced-1"))
    with pytest.raises(errors.InvalidMessage) as caught:
        session.client_message(msg)
    assert caught.value.violations[0].field == "finalize.finalize_id"
    ok = stt_pb2.SttClientMessage(finalize=transcription_pb2.Finalize(finalize_id="vx-1"))
    assert [r.finalize.finalize_id for r in session.client_message(ok).to_upstream] == ["vx-1"]


def test_failover_replays_from_the_ack_with_offsets_and_says_so():
    session = new_session()
    session.start(config())
    session.upstream_response(started())
    sent = [bytes([i]) * 3200 for i in range(30)]
    for chunk in sent:
        session.client_audio(chunk)
    session.upstream_response(final(0, 100, 1500))  # 1.5 s acknowledged, 2 utterances? no: 1
    actions = session.upstream_failed(errors.BackendUnavailable("adapter died"))
    assert actions.cancel_upstream and actions.open_upstream is not None
    assert actions.open_upstream.failover
    cfg = actions.open_upstream.config
    assert (cfg.stream_offset_ms, cfg.first_utterance_index) == (1500, 1)
    session.client_audio(b"\xff" * 3200)  # arrives during recovery
    actions = session.upstream_response(started())
    assert actions.to_client[0].notice.kind == actions.to_client[0].notice.KIND_FAILOVER
    assert audio_bytes(actions.to_upstream) == b"".join(sent)[1500 * 32 :] + b"\xff" * 3200


def test_a_repeated_speech_started_after_failover_is_said_once():
    session = new_session()
    session.start(config())
    session.upstream_response(started())
    speech = Response(speech_started=transcription_pb2.SpeechStarted(utterance_id="u0"))
    assert session.upstream_response(speech).to_client
    session.upstream_failed(errors.BackendUnavailable("x"))
    session.upstream_response(started())
    assert session.upstream_response(speech).to_client == []


def test_an_audio_format_notice_is_said_once_per_session_and_failovers_stay_said():
    # The upstream after a failover hears the replayed audio and judges it again.
    from voxwire.v1 import stream_pb2

    session = new_session()
    session.start(config())
    session.upstream_response(started())
    kind = stream_pb2.StreamNotice.KIND_FORMAT_SUSPECT
    suspect = Response(notice=stream_pb2.StreamNotice(kind=kind, message="not PCM_S16LE?"))
    said = session.upstream_response(suspect).to_client
    assert [m.notice.message for m in said] == ["not PCM_S16LE?"]
    session.upstream_failed(errors.BackendUnavailable("x"))
    moved = session.upstream_response(started()).to_client
    assert moved[0].notice.kind == stream_pb2.StreamNotice.KIND_FAILOVER
    assert session.upstream_response(suspect).to_client == []
    failover = Response(notice=stream_pb2.StreamNotice(kind=stream_pb2.StreamNotice.KIND_FAILOVER))
    assert len(session.upstream_response(failover).to_client) == 1  # each failover is news


def test_non_retryable_upstream_error_ends_the_session_with_its_event_and_code():
    session = new_session()
    session.start(config())
    actions = session.upstream_failed(errors.InvalidConfig("bad vocabulary"))
    assert actions.to_client[0].error.reason == "INVALID_CONFIG"
    assert actions.close is not None and actions.close.code == 1008


def test_failovers_without_progress_are_bounded():
    session = new_session(max_failovers=2)
    session.start(config())
    for _ in range(2):
        assert session.upstream_failed(errors.BackendUnavailable("x")).open_upstream
    actions = session.upstream_failed(errors.BackendUnavailable("x"))
    assert actions.close is not None and actions.close.code == 1013


def test_close_then_summary_ends_normally_and_merges_timings():
    clock = Clock()
    session = new_session(clock)
    session.start(config())
    clock.now += 0.25
    session.upstream_response(started())
    session.client_audio(CHUNK)
    actions = session.client_message(
        stt_pb2.SttClientMessage(close=transcription_pb2.CloseStream())
    )
    assert actions.to_upstream[-1].WhichOneof("request") == "close"
    assert not session.client_audio(CHUNK).to_upstream  # after close: discarded
    summary = Response(summary=transcription_pb2.TranscriptionSummary(audio_ms=100))
    summary.summary.timings.compute_us = 1234
    actions = session.upstream_response(summary)
    assert actions.close is not None and actions.close.code == 1000
    timings = actions.to_client[-1].summary.timings
    assert timings.compute_us == 1234 and timings.edge_connect_us == 250_000


def test_idle_warning_then_timeout():
    clock = Clock()
    session = new_session(clock, idle_timeout_s=10, idle_warning_s=3)
    session.start(config())
    session.upstream_response(started())
    assert session.next_deadline() == pytest.approx(clock.now + 7)
    clock.now += 7
    notice = session.on_time().to_client[0].notice
    assert notice.kind == notice.KIND_IDLE_WARNING and notice.remaining.seconds == 3
    clock.now += 3
    actions = session.on_time()
    assert actions.to_client[0].error.reason == "IDLE_TIMEOUT"
    assert actions.close is not None and actions.close.code == 4008


def test_drain_sends_going_away_with_a_token_and_closes_1012_at_the_end_of_grace():
    clock = Clock()
    session = new_session(clock, drain_grace_s=5)
    session.start(config())
    session.upstream_response(started())
    away = session.drain().to_client[0].going_away
    assert away.reason == "DRAINING" and away.resume_token and away.grace.seconds == 5
    clock.now += 5
    actions = session.on_time()
    assert actions.close is not None and actions.close.code == 1012


def test_maximum_duration_hands_over_after_finalizing():
    clock = Clock()
    session = new_session(clock, max_session_s=60, duration_warning_s=10)
    session.start(config())
    session.upstream_response(started())
    clock.now += 50
    session.client_audio(CHUNK)
    assert session.on_time().to_client[0].notice.kind == 3  # KIND_DURATION_WARNING
    clock.now += 10
    session.client_audio(CHUNK)
    actions = session.on_time()
    assert actions.to_client[0].going_away.reason == "STREAM_TOO_LONG"
    assert actions.to_upstream[-1].WhichOneof("request") == "close"
    # Audio after the handover began is not forwarded (the client replays it after resuming).
    assert session.client_audio(CHUNK).to_upstream == []
    end = session.upstream_response(
        Response(summary=transcription_pb2.TranscriptionSummary(audio_ms=100))
    )
    assert end.close is not None and end.close.code == 4009


def test_a_resumed_session_starts_at_the_ack():
    session = new_session()
    ack = stt_pb2.Ack(finalized_through_ms=4200, next_utterance_index=3)
    actions = session.start(config(), ack)
    assert actions.to_client[0].session.resumed
    assert actions.open_upstream is not None
    cfg = actions.open_upstream.config
    assert (cfg.stream_offset_ms, cfg.first_utterance_index) == (4200, 3)
    session.client_audio(CHUNK)
    assert session.window is not None and session.window.received_ms == 4300


def test_misaligned_and_oversized_audio():
    session = new_session(max_frame_bytes=4000)
    session.start(config())
    with pytest.raises(errors.MisalignedAudio):
        session.client_audio(b"\x00" * 3)
    with pytest.raises(errors.ChunkTooLarge):
        session.client_audio(bytes(4002))


def test_accepted_updates_are_part_of_the_config_after_a_failover():
    session = new_session()
    session.start(config())
    session.upstream_response(started())
    update = transcription_pb2.UpdateTranscriptionConfig(
        update_id="up1", vocabulary=[transcription_pb2.VocabularyEntry(phrase="voxwire")]
    )
    update.endpointing.silence_ms = 800
    session.client_message(stt_pb2.SttClientMessage(update_config=update))
    ack = Response(
        update_config_ack=transcription_pb2.UpdateConfigAck(update_id="up1", accepted=True)
    )
    session.upstream_response(ack)
    actions = session.upstream_failed(errors.BackendUnavailable("x"))
    assert actions.open_upstream is not None
    cfg = actions.open_upstream.config
    assert cfg.endpointing.silence_ms == 800 and [v.phrase for v in cfg.vocabulary] == ["voxwire"]
    # Nothing pending: the update is not sent again after the replay.
    kinds = {r.WhichOneof("request") for r in session.upstream_response(started()).to_upstream}
    assert "update_config" not in kinds


def test_what_follows_close_is_discarded_and_the_session_still_ends_with_its_results():
    # docs/contract.md: messages after a close are discarded unread and never change how the
    # stream ends. A stray finalize after close used to fail the session (INVALID_MESSAGE) and
    # lose the final result and the summary it was waiting for.
    clock = Clock()
    session = new_session(clock)
    session.start(config())
    session.upstream_response(started())
    session.client_audio(CHUNK)
    closed = session.client_message(stt_pb2.SttClientMessage(close=transcription_pb2.CloseStream()))
    assert [r.WhichOneof("request") for r in closed.to_upstream] == ["close"]
    assert session.input_ended
    clock.now += 5
    stray = [
        session.client_audio(CHUNK),
        session.client_audio(b"\x01"),  # misaligned too: unread, so no error
        session.client_message(stt_pb2.SttClientMessage(finalize=transcription_pb2.Finalize())),
        session.client_message(stt_pb2.SttClientMessage(close=transcription_pb2.CloseStream())),
        session.client_message(stt_pb2.SttClientMessage()),
    ]
    assert all(not a.to_upstream and not a.to_client and a.close is None for a in stray)
    assert session.next_deadline() >= clock.now + 1  # the client is there: not idle
    actions = session.upstream_response(final(0, 0, 100))
    assert [m.WhichOneof("message") for m in actions.to_client] == ["result"]
    summary = Response(summary=transcription_pb2.TranscriptionSummary(audio_ms=100, utterances=1))
    actions = session.upstream_response(summary)
    assert actions.close is not None and actions.close.code == 1000
    assert actions.to_client[-1].summary.audio_ms == 100


def test_audio_the_model_does_not_take_goes_converted_and_is_replayed_converted():
    # 8 kHz mu-law from the client, 16 kHz PCM16 for the model (a server that does not
    # resample): the config upstream names the model's format, the audio comes converted, a
    # finalize follows all the audio before it, and a failover converts the replay afresh.
    import numpy as np

    from voxwire.audio.codecs import Encoding, encode

    model_format = audio_pb2.AudioFormat(
        encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=16000, channels=1
    )
    session = SttEdgeSession(
        SttLimits(),
        session_id="s1",
        issue_token=lambda cfg, *_: ("t", 2e9),
        clock=Clock(),
        fit=lambda cfg: model_format,
    )
    phone = config()
    phone.audio_format.encoding, phone.audio_format.sample_rate_hz = (
        audio_pb2.AUDIO_ENCODING_MULAW,
        8000,
    )
    actions = session.start(phone)
    assert actions.open_upstream is not None
    assert actions.open_upstream.config.audio_format == model_format
    # The resume token keeps the client's format.
    assert session.config.audio_format.encoding == audio_pb2.AUDIO_ENCODING_MULAW
    tone = encode(0.5 * np.sin(np.arange(8000) * 2 * np.pi * 440 / 8000), Encoding.MULAW)
    frames = [tone[i : i + 800] for i in range(0, 8000, 800)]  # 100 ms each
    session.client_audio(frames[0])
    sent = session.upstream_response(started()).to_upstream
    for chunk in frames[1:5]:
        sent += session.client_audio(chunk).to_upstream
    finalize = stt_pb2.SttClientMessage(finalize=transcription_pb2.Finalize(finalize_id="f"))
    sent += session.client_message(finalize).to_upstream
    kinds = [r.WhichOneof("request") for r in sent]
    assert kinds[-1] == "finalize"
    assert len(audio_bytes(sent)) == 5 * 3200  # 500 ms at 16 kHz PCM16: the tail included
    for chunk in frames[5:]:
        sent = session.client_audio(chunk).to_upstream
    # A failover replays from the last ack (none yet: 0 ms), converted again from the start.
    actions = session.upstream_failed(errors.BackendUnavailable("gone"))
    assert actions.open_upstream is not None
    assert actions.open_upstream.config.audio_format == model_format
    replay = session.upstream_response(started()).to_upstream
    replay += session.client_message(stt_pb2.SttClientMessage(close={})).to_upstream
    assert [r.WhichOneof("request") for r in replay].count("finalize") == 1
    assert replay[-1].WhichOneof("request") == "close"
    assert len(audio_bytes(replay)) == 10 * 3200  # the whole second, once
