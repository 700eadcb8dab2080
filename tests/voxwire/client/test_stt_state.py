"""SttClientState without a network: feed server messages, check what it sends and reports."""

from __future__ import annotations

import pytest

from voxwire import errors
from voxwire.client.stt_state import Message, Phase, ServerMessage, SttClientState
from voxwire.edge.v1 import session_pb2, stt_pb2
from voxwire.v1 import audio_pb2, transcription_pb2

RATE = 16000
MS = RATE * 2 // 1000  # bytes per ms of 16-bit mono


def config() -> transcription_pb2.TranscriptionConfig:
    return transcription_pb2.TranscriptionConfig(
        model="stt_pocketsphinx",
        audio_format=audio_pb2.AudioFormat(
            encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=RATE
        ),
    )


def session(token: str = "t1", replay_window_ms: int = 30_000) -> ServerMessage:
    started = session_pb2.SessionStarted(session_id="s1", resume_token=token)
    started.limits.max_frame_bytes = 64 * 1024
    started.limits.replay_window.FromMilliseconds(replay_window_ms)
    return ServerMessage(session=started)


def final(uid: str, start: int, end: int, text: str, next_index: int) -> ServerMessage:
    msg = ServerMessage(
        result=transcription_pb2.TranscriptResult(
            utterance_id=uid, is_final=True, transcript=text, start_ms=start, end_ms=end
        )
    )
    msg.ack.finalized_through_ms = end
    msg.ack.next_utterance_index = next_index
    return msg


def audio(ms: int, fill: int = 0) -> bytes:
    return bytes([fill]) * (ms * MS)


def live(state: SttClientState) -> None:
    state.connected()
    state.receive(session())
    state.replay()


def test_a_new_session_starts_with_the_config_and_a_lost_one_resumes_with_token_and_ack():
    state = SttClientState(config(), max_replay_ms=60_000)
    first = state.connected()
    assert first.start.config.model == "stt_pocketsphinx" and not first.start.HasField("resume")
    state.receive(session(token="tok-A"))
    assert state.phase is Phase.LIVE
    state.audio_sent(audio(1000, 1))
    state.receive(final("u0", 0, 600, "hello", 1))
    assert state.connection_lost(1006).failure is None
    again = state.connected()
    assert again.start.resume.resume_token == "tok-A"
    assert again.start.resume.ack.finalized_through_ms == 600
    assert again.start.resume.ack.next_utterance_index == 1
    assert not again.start.HasField("config")


def test_the_replay_is_the_audio_after_the_ack_in_the_pieces_it_was_sent_in():
    state = SttClientState(config(), max_replay_ms=60_000)
    live(state)
    for i in range(10):
        state.audio_sent(audio(100, i))
    state.receive(final("u0", 0, 250, "hi", 1))
    state.connection_lost(None)
    state.connected()
    outcome = state.receive(session(token="tok-B"))
    assert outcome.session_up and outcome.resumed
    assert state.replay_ms == 750
    replay = state.replay()
    assert [len(p) for p in replay] == [50 * MS] + [100 * MS] * 7
    assert replay[0] == audio(50, 2) and replay[1] == audio(100, 3)
    assert state.token == "tok-B"


def test_controls_are_replayed_at_their_audio_positions_and_close_last():
    state = SttClientState(config(), max_replay_ms=60_000)
    live(state)
    state.audio_sent(audio(100, 1))
    state.finalize("f1")  # before the ack: goes first
    state.audio_sent(audio(100, 2))
    state.receive(final("u0", 0, 150, "a", 1))
    state.audio_sent(audio(100, 3))
    update = transcription_pb2.UpdateTranscriptionConfig(update_id="up1")
    state.update_config(update)
    state.audio_sent(audio(100, 4))
    state.close()
    state.connection_lost(1012)
    state.connected()
    state.receive(session())
    kinds = [
        p.WhichOneof("message") if isinstance(p, Message) else f"audio{p[0]}"
        for p in state.replay()
    ]
    assert kinds == ["finalize", "audio2", "audio3", "update_config", "audio4", "close"]


def test_an_accepted_update_is_resent_after_a_resume_unless_the_token_holds_it():
    state = SttClientState(config(), max_replay_ms=60_000)
    live(state)
    state.update_config(transcription_pb2.UpdateTranscriptionConfig(update_id="up1"))
    ack = ServerMessage(
        update_config_ack=transcription_pb2.UpdateConfigAck(update_id="up1", accepted=True)
    )
    assert state.receive(ack).events  # the caller sees it once
    state.connection_lost(1006)
    state.connected()
    state.receive(session(token="tok-2"))  # the session's token predates the update
    assert [m.WhichOneof("message") for m in state.replay() if isinstance(m, Message)] == [
        "update_config"
    ]
    assert not state.receive(ack).events  # the re-sent update's ack is not news
    # A going_away token is issued from the config with the update folded in.
    state.receive(
        ServerMessage(going_away=session_pb2.GoingAway(reason="DRAINING", resume_token="tok-3"))
    )
    state.connection_lost(None)
    state.connected()
    state.receive(session(token="tok-4"))
    assert not [m for m in state.replay() if isinstance(m, Message)]


def test_going_away_hands_over_at_once_unless_closing():
    state = SttClientState(config(), max_replay_ms=60_000)
    live(state)
    away = ServerMessage(going_away=session_pb2.GoingAway(reason="DRAINING", resume_token="g1"))
    assert state.receive(away).hand_over
    assert state.token == "g1"
    lost = state.connection_lost(None)
    assert lost.failure is None and lost.hand_over
    state.connected()
    state.receive(session())
    state.close()
    assert not state.receive(away).hand_over  # let it end within the grace


def test_repeats_of_a_resumed_connection_are_dropped():
    state = SttClientState(config(), max_replay_ms=60_000)
    state.connected()
    state.receive(session())
    started = ServerMessage(started=transcription_pb2.TranscriptionStarted(session_id="x"))
    speech = ServerMessage(speech_started=transcription_pb2.SpeechStarted(utterance_id="u3"))
    fin = ServerMessage(finalize_ack=transcription_pb2.FinalizeAck(finalize_id="f1"))
    state.finalize("f1")
    assert state.receive(started).events and state.receive(speech).events
    assert state.receive(fin).events
    state.connection_lost(1006)
    state.connected()
    state.receive(session())
    assert not state.receive(started).events
    assert not state.receive(speech).events
    assert not state.receive(fin).events
    assert state.receive(
        ServerMessage(speech_started=transcription_pb2.SpeechStarted(utterance_id="u4"))
    ).events


def test_errors_decide_the_close_retryable_with_its_delay_or_the_typed_failure():
    state = SttClientState(config(), max_replay_ms=60_000)
    live(state)
    busy = errors.to_event(errors.Overloaded("busy", retry_delay=None))
    busy.retry_after_ms = 1500
    state.receive(ServerMessage(error=busy))
    lost = state.connection_lost(1013)
    assert lost.failure is None and lost.retry_after_s == 1.5
    state.connected()
    rejected = errors.to_event(errors.ResumeRejected("expired"))
    state.receive(ServerMessage(error=rejected))
    lost = state.connection_lost(4011)
    assert isinstance(lost.failure, errors.ResumeRejected) and state.phase is Phase.FAILED


def test_closes_without_an_error_event_are_read_by_their_code():
    for code, resumes in [(1006, True), (1012, True), (1013, True), (4009, True), (1008, False)]:
        state = SttClientState(config(), max_replay_ms=60_000)
        live(state)
        assert (state.connection_lost(code).failure is None) is resumes, code


def test_room_is_the_smaller_replay_window_less_what_is_unacknowledged():
    state = SttClientState(config(), max_replay_ms=60_000)
    state.connected()
    state.receive(session(replay_window_ms=1000))
    assert state.room() == 1000 * MS
    state.audio_sent(audio(800))
    assert state.room() == 200 * MS
    state.receive(final("u0", 0, 500, "x", 1))
    assert state.room() == 700 * MS
    small = SttClientState(config(), max_replay_ms=300)
    assert small.room() == 300 * MS


def test_misaligned_audio_and_missing_formats_are_refused():
    state = SttClientState(config(), max_replay_ms=1000)
    with pytest.raises(errors.MisalignedAudio):
        state.audio_sent(b"\x00" * 3)
    with pytest.raises(errors.InvalidConfig):
        SttClientState(transcription_pb2.TranscriptionConfig(), max_replay_ms=1000)
    bad = config()
    bad.audio_format.sample_rate_hz = 12345
    with pytest.raises(errors.UnsupportedSampleRate):
        SttClientState(bad, max_replay_ms=1000)


def test_the_summary_ends_the_session_and_a_close_after_it_is_not_a_failure():
    state = SttClientState(config(), max_replay_ms=1000)
    live(state)
    outcome = state.receive(ServerMessage(summary=session_pb2.SessionSummary(session_id="s1")))
    assert outcome.ended and state.phase is Phase.ENDED
    assert state.connection_lost(1000).ended


def test_acks_only_move_forward():
    state = SttClientState(config(), max_replay_ms=60_000)
    live(state)
    state.audio_sent(audio(1000))
    state.receive(final("u1", 0, 800, "x", 2))
    stale = ServerMessage(ack=stt_pb2.Ack(finalized_through_ms=300, next_utterance_index=1))
    state.receive(stale)
    assert (state.ack.finalized_through_ms, state.ack.next_utterance_index) == (800, 2)


def test_the_window_bounds_a_piece_so_that_it_always_fits_after_an_ack():
    state = SttClientState(config(), max_replay_ms=300)
    state.connected()
    state.receive(session(replay_window_ms=30_000))
    assert state.window_bytes == 300 * MS
    assert state.max_piece_bytes == 64 * 1024  # the frame limit is larger than the window
