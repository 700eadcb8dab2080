"""The edge sessions' failover without any network: every TTS word timestamp reaches the client
once, whatever was queued or sent when the upstream failed (found by tests/gateway/
test_adapter_failover.py, where an adapter is killed mid-context); only an adapter's FAILOVER
notices are passed on."""

from __future__ import annotations

from gateway.stt.session import SttEdgeSession, SttLimits
from gateway.tts.session import TtsEdgeSession
from gateway.wire.frames import unpack
from tests.gateway.test_stt_session import config, started
from tests.gateway.test_tts_session import Clock, Up, chunk, opened_session
from voxwire import errors
from voxwire.edge.v1 import tts_pb2
from voxwire.v1 import stream_pb2, synthesis_pb2, transcription_pb2

Client = tts_pb2.TtsClientMessage
TEXT = "Hello there, how are you?"


def words(*marks: tuple[str, int, int, int]) -> Up:
    """A words response: (word, end_ms, text_offset, text_length) each."""
    return Up(
        context_id="c1",
        words=synthesis_pb2.WordTimestamps(
            words=[
                synthesis_pb2.WordTimestamp(
                    word=w, start_ms=max(0, end - 300), end_ms=end, text_offset=o, text_length=n
                )
                for w, end, o, n in marks
            ]
        ),
    )


def sent_words(messages: list) -> list[tuple[str, int]]:
    return [
        (w.word, w.text_offset)
        for m in messages
        if not isinstance(m, bytes) and m.WhichOneof("message") == "words"
        for w in m.words.words
    ]


def fail_over(session: TtsEdgeSession, key: int) -> tuple[int, list, str]:
    """Fail the upstream; returns the new key, what the client got, and the text resent."""
    actions = session.upstream_failed(key, errors.BackendUnavailable("adapter died"))
    (reopen,) = actions.open_upstream
    text = next((r.append.text for r in reopen.requests if r.HasField("append")), "")
    out = list(actions.to_client)
    opened = Up(context_id="c1", opened=synthesis_pb2.ContextOpened())
    out += session.upstream_response(reopen.key, opened).to_client
    return reopen.key, out, text


def test_a_word_cut_by_a_failover_is_sent_once_with_its_new_timing():
    """A word's timestamp goes out just before the chunk that completes its audio: the model
    sent "there" ahead, its audio was cut at 400 ms, and the failover speaks it again from
    its start, ending later (700 ms, not 650): only that timestamp reaches the client. Sent
    ahead, the stale one made the SDK's next resume skip the rest of the word
    (tests/client/test_tts_resume_props.py)."""
    clock = Clock()
    session, key = opened_session(clock, lead_ms=0)
    session.client_message(Client(context_id="c1", append=synthesis_pb2.AppendText(text=TEXT)))
    got = session.upstream_response(key, words(("Hello", 300, 0, 5), ("there", 650, 6, 5)))
    got = list(got.to_client)
    assert sent_words(got) == []  # no audio yet
    for seq in range(1, 5):  # audio to 400 ms: "there" is cut
        got += session.upstream_response(key, chunk(seq, (seq - 1) * 100)).to_client
    assert sent_words(got) == [("Hello", 0)]
    third = next(
        i for i, m in enumerate(got) if isinstance(m, bytes) and unpack(m).sequence_number == 3
    )
    assert not isinstance(got[third - 1], bytes)  # "Hello" just before the chunk ending at 300
    key, out, text = fail_over(session, key)
    got += out
    assert text == " there, how are you?"  # its audio goes on from the word that was cut
    got += session.upstream_response(key, words(("there", 700, 1, 5), ("how", 900, 8, 3))).to_client
    for seq in range(5, 10):  # the new call's audio, 400 to 900 ms
        got += session.upstream_response(key, chunk(seq, (seq - 1) * 100)).to_client
    assert sent_words(got) == [("Hello", 0), ("there", 6), ("how", 13)]
    ends = [
        w.end_ms
        for m in got
        if not isinstance(m, bytes) and m.HasField("words")
        for w in m.words.words
    ]
    assert ends == [300, 700, 900]


def test_a_queued_word_whose_audio_was_sent_still_reaches_the_client():
    clock = Clock()
    session, key = opened_session(clock, lead_ms=300)
    session.client_message(Client(context_id="c1", append=synthesis_pb2.AppendText(text=TEXT)))
    got = []
    for seq in range(1, 7):  # 600 ms arrive; the lead lets 0..300 ms out (4 chunks)
        got += session.upstream_response(key, chunk(seq, (seq - 1) * 100)).to_client
    # The model tells "Hello" (ended at 300 ms) late: queued behind the paced chunks.
    got += session.upstream_response(key, words(("Hello", 300, 0, 5))).to_client
    assert sent_words(got) == []
    key, out, text = fail_over(session, key)
    got += out
    # Its audio is out (to 400 ms) and it is not spoken again: its timestamp must not be lost.
    assert text == " there, how are you?"
    assert sent_words(got) == [("Hello", 0)]


def test_a_second_failover_resumes_after_the_words_of_the_first():
    clock = Clock()
    session, key = opened_session(clock, lead_ms=0)
    session.client_message(Client(context_id="c1", append=synthesis_pb2.AppendText(text=TEXT)))
    session.upstream_response(key, words(("Hello", 300, 0, 5)))
    for seq in range(1, 5):
        session.upstream_response(key, chunk(seq, (seq - 1) * 100))
    key, _, text = fail_over(session, key)
    assert text == " there, how are you?"
    # The new stream counts text offsets from its own text (" there, ..."): "there" at 1.
    session.upstream_response(key, words(("there", 700, 1, 5)))
    for seq in range(5, 9):  # audio to 800 ms: "there" is heard
        session.upstream_response(key, chunk(seq, (seq - 1) * 100))
    _, _, text = fail_over(session, key)
    assert text == ", how are you?"


def test_only_an_adapters_failover_notice_reaches_the_client():
    # The adapter's idle, duration and drain warnings concern the gateway's upstream call (the
    # gateway keeps it alive or moves it); the session's own warnings are the gateway's.
    kinds = stream_pb2.StreamNotice
    stt = SttEdgeSession(SttLimits(), session_id="s", issue_token=lambda cfg, *_: ("t", 2e9))
    stt.start(config())
    stt.upstream_response(started())
    clock = Clock()
    tts, key = opened_session(clock)
    for kind in (kinds.KIND_IDLE_WARNING, kinds.KIND_DURATION_WARNING, kinds.KIND_DRAINING):
        notice = stream_pb2.StreamNotice(kind=kind)
        up = transcription_pb2.StreamingTranscribeResponse(notice=notice)
        assert stt.upstream_response(up).to_client == []
        assert tts.upstream_response(key, Up(notice=notice)).to_client == []
    moved = stream_pb2.StreamNotice(kind=kinds.KIND_FAILOVER, replica="r1")
    up = transcription_pb2.StreamingTranscribeResponse(notice=moved)
    (out,) = stt.upstream_response(up).to_client
    assert out.notice == moved
    (out,) = tts.upstream_response(key, Up(context_id="c1", notice=moved)).to_client
    assert out.notice == moved and out.context_id == "c1"
