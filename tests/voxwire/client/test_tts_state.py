"""SynthesisClientState without a network: reopening contexts on a resume, repeats dropped."""

from __future__ import annotations

from voxwire.client.tts_state import (
    ServerMessage,
    SynthesisClientState,
    SynthesizedAudio,
)
from voxwire.edge.frames import AudioFrame
from voxwire.edge.v1 import session_pb2, tts_pb2
from voxwire.v1 import audio_pb2, synthesis_pb2

TEXT = "Hello there. How are you today?"
RATE = 22050


def config() -> synthesis_pb2.SynthesisContextConfig:
    return synthesis_pb2.SynthesisContextConfig(
        model="tts_espeak",
        word_timestamps=True,
        output_format=audio_pb2.AudioFormat(
            encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=RATE
        ),
    )


def up(state: SynthesisClientState, token: str = "t1") -> None:
    state.connected()
    state.receive(ServerMessage(session=session_pb2.SessionStarted(resume_token=token)))


def opened(cid: str, handle: int) -> ServerMessage:
    return ServerMessage(context_id=cid, opened=tts_pb2.ContextOpened(handle=handle))


def words(cid: str, *marks: tuple[str, int, int, int]) -> ServerMessage:
    msg = ServerMessage(context_id=cid, words=synthesis_pb2.WordTimestamps())
    for word, offset, length, end in marks:
        msg.words.words.add(word=word, text_offset=offset, text_length=length, end_ms=end)
    return msg


def frame(handle: int, seq: int, start_ms: int, ms: int) -> AudioFrame:
    return AudioFrame(handle, seq, start_ms, bytes(RATE * 2 * ms // 1000))


def test_a_resume_reopens_the_context_after_the_last_word_heard_completely():
    state = SynthesisClientState(tts_pb2.TtsStart(audio_delivery=tts_pb2.AUDIO_DELIVERY_BINARY))
    up(state)
    state.open("c1", config())
    state.append("c1", TEXT)
    state.flush("c1", "fl1")
    state.close_context("c1")
    state.receive(opened("c1", 7))
    got = [state.binary_frame(frame(7, n + 1, n * 100, 100)) for n in range(5)]
    assert [e.sequence_number for o in got for _, e in o.events] == [1, 2, 3, 4, 5]
    state.receive(words("c1", ("Hello", 0, 5, 300), ("there", 6, 5, 620)))
    state.connection_lost(1006)
    again = state.connected()
    assert again.start.resume.resume_token == "t1"
    out = state.receive(ServerMessage(session=session_pb2.SessionStarted(resume_token="t2")))
    assert out.session_up and out.resumed
    replay, stopped = state.replay()
    assert not stopped.events and not stopped.ended
    assert [m.WhichOneof("message") for m in replay] == ["open", "append", "flush", "close"]
    assert replay[0].open.timeline_offset_ms == 500
    assert replay[0].open.first_sequence_number == 6
    assert replay[1].append.text == TEXT[5:]  # after "Hello" (its audio ended at 300 ms)
    # The reopened stream: its `opened` is not news; its offsets count from the resume point.
    assert not state.receive(opened("c1", 2)).events
    again_words = state.receive(words("c1", ("there", 1, 5, 620), ("How", 8, 3, 900)))
    ((_, passed),) = again_words.events
    assert [(w.word, w.text_offset) for w in passed.words] == [("How", 13)]
    chunk = state.binary_frame(frame(2, 6, 500, 100))  # handles of the new connection
    assert [e for _, e in chunk.events] == [
        SynthesizedAudio(6, 500, 100, frame(2, 6, 500, 100).audio)
    ]


def test_audio_already_received_is_not_passed_on_twice():
    state = SynthesisClientState(tts_pb2.TtsStart())
    up(state)
    state.open("c1", config())
    state.receive(opened("c1", 1))
    assert state.binary_frame(frame(1, 1, 0, 100)).events
    assert not state.binary_frame(frame(1, 1, 0, 100)).events


def test_ended_contexts_are_not_reopened_and_close_session_follows_the_contexts():
    state = SynthesisClientState(tts_pb2.TtsStart())
    up(state)
    state.open("a", config())
    state.open("b", config())
    state.receive(opened("a", 1))
    done = state.receive(
        ServerMessage(context_id="a", done=synthesis_pb2.ContextDone(last_sequence_number=0))
    )
    assert done.ended == [("a", None)]
    # An ended context leaves nothing in the state, its handle included (a session of many
    # turns kept an entry per context id it had used).
    assert "a" not in state.contexts and 1 not in state._handles
    state.close_session()
    state.connection_lost(1012)
    state.connected()
    state.receive(ServerMessage(session=session_pb2.SessionStarted(resume_token="t2")))
    replay, _ = state.replay()
    assert [(m.context_id, m.WhichOneof("message")) for m in replay] == [
        ("b", "open"),
        ("", "close_session"),
    ]


def test_a_context_error_ends_only_that_context_with_its_typed_error():
    from voxwire import errors

    state = SynthesisClientState(tts_pb2.TtsStart())
    up(state)
    state.open("c1", config())
    event = tts_pb2.ContextError(error=errors.to_event(errors.UnknownModel("no such model")))
    out = state.receive(ServerMessage(context_id="c1", context_error=event))
    ((cid, error),) = out.ended
    assert cid == "c1" and isinstance(error, errors.UnknownModel)
    assert state.connection_lost(1000).failure is not None  # no summary: not a normal end


def test_a_context_cancelled_or_truncated_before_a_resume_is_not_reopened_and_ends_there():
    """The stop (or its answer) died with the connection: reopened, the context would speak
    on after the barge-in. It ends at the resume with the event the gateway would have sent;
    an unstopped context is reopened as usual."""
    state = SynthesisClientState(tts_pb2.TtsStart(audio_delivery=tts_pb2.AUDIO_DELIVERY_BINARY))
    up(state)
    for cid, handle in (("barged", 1), ("cut", 2), ("goes_on", 3)):
        state.open(cid, config())
        state.append(cid, TEXT)
        state.receive(opened(cid, handle))
        for n in range(4):
            state.binary_frame(frame(handle, n + 1, n * 100, 100))
    state.receive(words("cut", ("Hello", 0, 5, 300), ("there", 6, 5, 420)))
    cancel = state.cancel("barged")
    truncate = state.truncate("cut", 350)
    assert cancel is not None and cancel.WhichOneof("message") == "cancel"
    assert truncate is not None and truncate.truncate.played_ms == 350
    state.connection_lost(1006)  # before `cancelled` and `truncated` came
    state.connected()
    state.receive(ServerMessage(session=session_pb2.SessionStarted(resume_token="t2")))
    replay, stopped = state.replay()
    assert [(m.context_id, m.WhichOneof("message")) for m in replay] == [
        ("goes_on", "open"),
        ("goes_on", "append"),
    ]
    events = dict(stopped.events)
    assert events["barged"] == synthesis_pb2.ContextCancelled(last_sequence_number=4)
    truncated = events["cut"]
    assert isinstance(truncated, tts_pb2.Truncated)
    assert truncated.played_ms == 350 and truncated.last_sequence_number == 4
    assert [w.word for w in truncated.heard] == ["Hello"]  # "there" ended at 420 ms
    assert stopped.ended == [("barged", None), ("cut", None)]
    assert "barged" not in state.contexts and "cut" not in state.contexts
    # Late messages of the old contexts are dropped; the next resume does not reopen them.
    assert not state.binary_frame(frame(1, 5, 400, 100)).events
    state.connection_lost(1006)
    state.connected()
    state.receive(ServerMessage(session=session_pb2.SessionStarted(resume_token="t3")))
    replay, stopped = state.replay()
    assert {m.context_id for m in replay} == {"goes_on"} and not stopped.events


def test_a_session_of_many_turns_holds_nothing_of_the_turns_that_ended():
    state = SynthesisClientState(tts_pb2.TtsStart())
    up(state)
    for turn in range(2000):
        cid = f"turn-{turn}"
        state.open(cid, config())
        state.receive(opened(cid, turn % 7 + 1))  # the gateway reuses its handles
        end = synthesis_pb2.ContextDone() if turn % 2 else synthesis_pb2.ContextCancelled()
        kind = "done" if turn % 2 else "cancelled"
        state.receive(ServerMessage(context_id=cid, **{kind: end}))
    assert state.contexts == {} and state._handles == {}
    assert state.cancel("turn-3") is None  # ended long ago: nothing to stop
