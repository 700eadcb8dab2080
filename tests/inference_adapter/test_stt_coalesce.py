"""Audio that comes while a model request is unanswered waits for its answer and goes as one
request (TranscriptionSession, ``coalesce_ms``): sans-I/O, driven by events alone."""

from __future__ import annotations

import numpy as np
import pytest

from inference_adapter.config import Limits
from inference_adapter.stt.config import resolve
from inference_adapter.stt.replay import ReplayPolicy
from inference_adapter.stt.session import ModelRequest, TranscriptionSession
from tests.inference_adapter.test_stt_session import MODEL, Req, answer, config
from voxwire.v1 import audio_pb2

FRAME = 320  # 20 ms at 16 kHz


def session(coalesce_ms: int = 200, **kw) -> TranscriptionSession:
    resolved = resolve(config(**kw), {MODEL.name: MODEL}, Limits(), request_id="r")
    replay = ReplayPolicy(window_ms=30_000, force_final_margin_ms=5_000, max_failovers=3)
    return TranscriptionSession(
        resolved, Limits(), session_id="s", replay=replay, coalesce_ms=coalesce_ms
    )


def frame(i: int) -> bytes:
    """20 ms of PCM16 whose samples say which frame they are (i * FRAME + n)."""
    return (np.arange(FRAME, dtype=np.int16) + i * FRAME).astype("<i2").tobytes()


def samples(requests: list[ModelRequest]) -> np.ndarray:
    return np.concatenate([r.audio for r in requests]) if requests else np.zeros(0, np.int16)


def started(s: TranscriptionSession) -> None:
    s.start()
    s.model_response(answer({"type": "ready", "vocabulary": []}))


def test_a_model_that_keeps_up_gets_every_chunk_as_it_comes():
    s = session()
    started(s)
    for i in range(10):
        (request,) = s.receive(Req(audio=frame(i))).to_model
        assert request.audio.size == FRAME
        s.model_response(answer())
        assert s.release() == []
    assert s.timings.model_requests == 11  # START + 10


def test_audio_waits_for_the_answer_and_goes_as_one_request_in_order():
    s = session()
    started(s)
    sent = s.receive(Req(audio=frame(0))).to_model  # nothing unanswered: goes at once
    assert len(sent) == 1
    for i in range(1, 6):  # the model is behind: these wait
        assert s.receive(Req(audio=frame(i))).to_model == []
    assert s.release() == []  # frame 0 is not answered yet
    s.model_response(answer())
    (merged,) = s.release()
    sent.append(merged)
    assert merged.audio.size == 5 * FRAME
    assert s.release() == []  # nothing waits any more
    s.model_response(answer())
    sent += s.half_close().to_model
    # Every sample once, in order; fewer requests than chunks.
    np.testing.assert_array_equal(samples(sent), np.arange(6 * FRAME, dtype=np.int16))
    assert s.timings.model_requests == 4  # START, frame 0, frames 1-5, END


def test_waiting_audio_is_bounded_by_coalesce_ms():
    s = session(coalesce_ms=100)  # five frames
    started(s)
    s.receive(Req(audio=frame(0)))
    out = [s.receive(Req(audio=frame(i))).to_model for i in range(1, 11)]
    # Requests go out every 100 ms of audio even though nothing is answered.
    assert [len(o) for o in out] == [0, 0, 0, 0, 1, 0, 0, 0, 0, 1]
    assert out[4][0].audio.size == out[9][0].audio.size == 5 * FRAME


@pytest.mark.parametrize("control", ["finalize", "close"])
def test_a_finalize_or_close_carries_the_waiting_audio(control):
    s = session()
    started(s)
    s.receive(Req(audio=frame(0)))
    s.receive(Req(audio=frame(1)))
    s.receive(Req(audio=frame(2)))
    if control == "finalize":
        (request,) = s.receive(Req(finalize={"finalize_id": "a"})).to_model
        assert request.control == {"finalize": "f1"}
    else:
        (request,) = s.half_close().to_model
        assert request.end
    np.testing.assert_array_equal(request.audio, np.arange(FRAME, 3 * FRAME, dtype=np.int16))
    assert s.release() == []


def test_an_update_goes_after_the_audio_that_came_before_it():
    s = session(endpointing={"silence_ms": 500})
    started(s)
    s.receive(Req(audio=frame(0)))
    s.receive(Req(audio=frame(1)))
    audio, update = s.receive(Req(update_config={"update_id": "u"})).to_model
    assert audio.audio.size == FRAME and audio.control is None
    assert "update_config" in update.control


def test_a_cancel_drops_the_waiting_audio():
    s = session()
    started(s)
    s.receive(Req(audio=frame(0)))
    s.receive(Req(audio=frame(1)))
    assert s.cancel().audio.size == 0
    s.model_response(answer())
    assert s.release() == []


def test_off_sends_every_chunk_even_when_the_model_is_behind():
    s = session(coalesce_ms=0)
    started(s)
    for i in range(5):
        assert len(s.receive(Req(audio=frame(i))).to_model) == 1


def test_a_failover_replays_what_was_sent_and_the_waiting_audio_follows_it():
    s = session()
    started(s)
    sent = s.receive(Req(audio=frame(0))).to_model
    s.receive(Req(audio=frame(1)))  # waits for frame 0's answer, which never comes
    replay = s.fail_over("b")
    assert replay[0].start
    np.testing.assert_array_equal(samples(replay[1:]), samples(sent))  # frame 0 only
    s.model_response(answer({"type": "ready"}))  # the new START
    assert s.release() == []  # the replayed frame 0 is unanswered
    s.model_response(answer())
    (after,) = s.release()
    np.testing.assert_array_equal(after.audio, np.arange(FRAME, 2 * FRAME, dtype=np.int16))


def test_converted_audio_waits_as_model_audio():
    s = session(encoding=audio_pb2.AUDIO_ENCODING_MULAW, rate=8000)
    started(s)
    total = sum(r.audio.size for r in s.receive(Req(audio=b"\xff" * 160)).to_model)
    for _ in range(49):
        total += sum(r.audio.size for r in s.receive(Req(audio=b"\xff" * 160)).to_model)
    assert s.timings.model_requests < 10  # 1 s in 20 ms frames, nothing answered
    total += s.half_close().to_model[0].audio.size
    assert abs(total - 16000) <= 2
