"""TranscriptionSession.fail_over without any network: what a stream sends to its new sequence
after its replica failed, and what the client sees (docs/contract.md, "Failover")."""

from __future__ import annotations

import datetime
from dataclasses import replace

import numpy as np
import pytest

from inference_adapter.config import Limits
from inference_adapter.stt.config import resolve
from inference_adapter.stt.replay import ReplayPolicy
from inference_adapter.stt.session import ModelRequest, State, TranscriptionSession
from inference_adapter.triton.tensors import ModelResponse
from tests.inference_adapter.test_stt_session import MODEL, config
from voxwire import errors
from voxwire.v1 import audio_pb2, stream_pb2, transcription_pb2

Req = transcription_pb2.StreamingTranscribeRequest
POLICY = ReplayPolicy(window_ms=2000, force_final_margin_ms=500, max_failovers=2)
FAILOVER = stream_pb2.StreamNotice.KIND_FAILOVER


def session(policy: ReplayPolicy = POLICY, **kw) -> TranscriptionSession:
    resolved = resolve(config(**kw), {MODEL.name: MODEL}, Limits(), request_id="r")
    s = TranscriptionSession(resolved, Limits(), session_id="s", replica="a", replay=policy)
    s.start()
    s.model_response(answer({"type": "ready", "vocabulary": []}))
    return s


def answer(*events, final=True) -> ModelResponse:
    return ModelResponse(events=tuple(events), compute_us=50, audio=None, final=final)


def chunk(index: int, ms: int = 100) -> bytes:
    """PCM16 at 16 kHz whose samples say which chunk they came from."""
    return np.full(16 * ms, index, dtype="<i2").tobytes()


def audio_of(requests: list[ModelRequest]) -> bytes:
    return b"".join(r.audio.astype("<i2").tobytes() for r in requests)


def answer_all(s: TranscriptionSession) -> None:
    while s.inflight:
        s.model_response(answer())


def test_replay_starts_at_the_last_final_and_positions_continue():
    s = session(stream_offset_ms=10_000, first_utterance_index=3)
    for i in range(10):
        s.receive(Req(audio=chunk(i)))
    answer_all(s)
    (final,) = s.model_response(
        answer(
            {"type": "final", "utterance": 0, "text": "a", "start_ms": 0, "end_ms": 400},
            final=False,
        )
    )
    assert (final.result.utterance_id, final.result.end_ms) == ("u3", 10_400)
    s.receive(Req(audio=chunk(10)))
    requests = s.fail_over("b")
    start, *replay = requests
    assert start.start and start.control == s.config.model_control()
    # Exactly the model input from 400 ms on, in the pieces it was sent in.
    assert audio_of(replay) == b"".join(chunk(i) for i in range(11))[400 * 32 :]
    assert [r.audio.size for r in replay] == [1600] * 7
    assert s.inflight == len(requests)  # the old sequence's requests are not awaited
    # The new sequence's times count from the replay's start; ids go on from the next one.
    (notice,) = s.model_response(answer({"type": "ready", "vocabulary": []}))
    assert notice.notice.kind == FAILOVER and notice.notice.replica == "b"
    (result,) = s.model_response(
        answer({"type": "final", "utterance": 0, "text": "b", "start_ms": 100, "end_ms": 600})
    )
    assert (result.result.utterance_id, result.result.start_ms, result.result.end_ms) == (
        "u4",
        10_500,
        11_000,
    )
    assert s.timings.replica == "b"


def test_unanswered_controls_are_sent_again_at_their_positions():
    s = session()
    s.receive(Req(audio=chunk(1)))
    s.receive(Req(finalize=transcription_pb2.Finalize(finalize_id="f-client")))
    s.receive(Req(audio=chunk(2)))
    update = transcription_pb2.UpdateTranscriptionConfig(
        update_id="u-client", vocabulary=[transcription_pb2.VocabularyEntry(phrase="voxwire")]
    )
    s.receive(Req(update_config=update))
    s.receive(Req(audio=chunk(3)))
    s.receive(Req(close=transcription_pb2.CloseStream()))
    assert s.state is State.CLOSING
    _, *replay = s.fail_over("b")
    shape = [("audio", r.audio[0]) if r.audio.size else (r.control, r.end) for r in replay]
    assert shape == [
        ("audio", 1),
        ({"finalize": "f1"}, False),
        ("audio", 2),
        (replay[3].control, False),
        ("audio", 3),
        (None, True),  # the END, last, as the client closed
    ]
    assert replay[3].control["update_config"]["vocabulary"] == [{"phrase": "voxwire"}]
    s.model_response(answer({"type": "ready", "vocabulary": []}))
    # The re-sent finalize is acknowledged once, with the client's id and position.
    s.model_response(answer())
    (ack,) = s.model_response(answer({"type": "finalize_ack", "id": "f1", "audio_ms": 100}))
    assert (ack.finalize_ack.finalize_id, ack.finalize_ack.audio_ms) == ("f-client", 100)


def test_an_accepted_update_is_part_of_the_new_start():
    s = session()
    update = transcription_pb2.UpdateTranscriptionConfig(
        update_id="x",
        endpointing=transcription_pb2.EndpointingConfig(silence_ms=300),
        vocabulary=[transcription_pb2.VocabularyEntry(phrase="voxwire")],
    )
    (request,) = s.receive(Req(update_config=update)).to_model
    internal = request.control["update_config"]["id"]
    s.model_response(answer({"type": "config_ack", "id": internal, "accepted": True}))
    s.receive(Req(audio=chunk(1)))
    start, audio = s.fail_over("b")
    assert start.control["config"]["endpointing"] == {"silence_ms": 300}
    assert start.control["config"]["vocabulary"] == [{"phrase": "voxwire"}]
    assert audio.audio.size == 1600  # and the update is not sent again


def test_a_final_is_forced_before_the_window_fills_and_its_ack_is_not_sent():
    s = session(policy=ReplayPolicy(window_ms=1000, force_final_margin_ms=300, max_failovers=1))
    forced = []
    for i in range(7):
        actions = s.receive(Req(audio=chunk(i)))
        forced += [r for r in actions.to_model if r.control]
    (request,) = forced  # at 700 ms of unacknowledged audio, once: the last request
    internal = request.control["finalize"]
    while s.inflight > 1:
        s.model_response(answer())
    s.receive(Req(audio=chunk(7)))
    final = {"type": "final", "utterance": 0, "text": "x", "start_ms": 0, "end_ms": 700}
    ack = {"type": "finalize_ack", "id": internal, "audio_ms": 700}
    out = s.model_response(answer(final, ack))  # the finalize's answer carries its ack
    assert [r.WhichOneof("response") for r in out] == ["result"]  # the ack is the session's
    _, *replay = s.fail_over("b")
    assert audio_of(replay) == chunk(7)


def test_a_window_that_overflowed_cannot_be_replayed():
    s = session(policy=ReplayPolicy(window_ms=500, force_final_margin_ms=100, max_failovers=3))
    for i in range(12):  # the forced final is never answered: 1.2 s > 2 x the window
        s.receive(Req(audio=chunk(i)))
    with pytest.raises(errors.BackendUnavailable, match="outgrew the replay window"):
        s.fail_over("b")


def test_failovers_without_progress_are_bounded_and_progress_resets_them():
    s = session(policy=replace(POLICY, retry_after=datetime.timedelta(seconds=2)))
    s.receive(Req(audio=chunk(1)))
    s.fail_over("b")
    s.fail_over("c")
    with pytest.raises(errors.BackendUnavailable, match="2 failovers without progress") as hit:
        s.fail_over("d")
    # Retryable after a wait, as with no replica left: both replicas killed at once can bounce
    # a stream between them until the bound, and it ended with no retry delay (a CI failure of
    # test_with_no_replica_left_the_stream_fails_retryable).
    assert hit.value.retry_delay == datetime.timedelta(seconds=2)
    s = session()
    s.receive(Req(audio=chunk(1)))
    s.fail_over("b")
    s.model_response(answer({"type": "ready", "vocabulary": []}))
    s.model_response(
        answer({"type": "final", "utterance": 0, "text": "a", "start_ms": 0, "end_ms": 50})
    )
    s.fail_over("c")
    s.fail_over("d")  # the final moved the position: the budget started again


def test_failover_before_the_first_start_is_answered_sends_started_then_the_notice():
    resolved = resolve(config(), {MODEL.name: MODEL}, Limits(), request_id="r")
    s = TranscriptionSession(resolved, Limits(), session_id="s", replay=POLICY)
    s.start()
    s.receive(Req(audio=chunk(1)))
    start, audio = s.fail_over("b")
    assert start.start and audio.audio.size == 1600
    out = s.model_response(answer({"type": "ready", "vocabulary": []}))
    assert [r.WhichOneof("response") for r in out] == ["started", "notice"]


def test_without_a_policy_there_is_no_failover_and_no_window():
    resolved = resolve(config(), {MODEL.name: MODEL}, Limits(), request_id="r")
    s = TranscriptionSession(resolved, Limits(), session_id="s")
    s.start()
    for i in range(400):  # 40 s: no forced final either
        assert len(s.receive(Req(audio=chunk(i))).to_model) == 1
    with pytest.raises(errors.BackendUnavailable, match="failover is off"):
        s.fail_over("b")


def test_a_resampled_stream_replays_the_model_input_it_sent():
    s = session(encoding=audio_pb2.AUDIO_ENCODING_MULAW, rate=8000)
    sent = []
    rng = np.random.default_rng(1)
    for _ in range(6):
        data = rng.integers(0, 256, 800, dtype=np.uint8).tobytes()
        sent += s.receive(Req(audio=data)).to_model
    answer_all(s)
    s.model_response(
        answer(
            {"type": "final", "utterance": 0, "text": "a", "start_ms": 0, "end_ms": 200},
            final=False,
        )
    )
    _, *replay = s.fail_over("b")
    # Bit for bit what the model got after 200 ms (3200 samples at 16 kHz), not a re-resampling.
    assert audio_of(replay) == audio_of(sent)[3200 * 2 :]


def test_a_notice_before_started_waits_for_it():
    resolved = resolve(config(), {MODEL.name: MODEL}, Limits(), request_id="r")
    s = TranscriptionSession(resolved, Limits(), session_id="s")
    s.start()
    draining = stream_pb2.StreamNotice(kind=stream_pb2.StreamNotice.KIND_DRAINING)
    assert s.notice(draining) is None  # the contract: `started` comes first
    out = s.model_response(answer({"type": "ready", "vocabulary": []}))
    assert [r.WhichOneof("response") for r in out] == ["started", "notice"]
    assert s.notice(draining).notice == draining
