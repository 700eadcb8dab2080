"""TtsEdgeSession without any network: pacing, acks, cancel, truncate, failover."""

from __future__ import annotations

import pytest

from gateway.tts.session import TtsEdgeSession, TtsLimits
from gateway.wire.frames import unpack
from tests.helpers.clock import Clock
from voxwire import errors
from voxwire.edge.v1 import tts_pb2
from voxwire.v1 import audio_pb2, synthesis_pb2

Client = tts_pb2.TtsClientMessage
Up = synthesis_pb2.StreamingSynthesizeResponse


def new_session(clock: Clock, **limits: float) -> TtsEdgeSession:
    return TtsEdgeSession(
        TtsLimits(**limits),  # type: ignore[arg-type]
        session_id="t1",
        issue_token=lambda options, *_: ("tok", 2e9),
        clock=clock,
    )


def open_msg(cid: str = "c1") -> Client:
    fmt = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=24000)
    return Client(context_id=cid, open=synthesis_pb2.SynthesisContextConfig(output_format=fmt))


def chunk(seq: int, start: int, ms: int = 100) -> Up:
    audio = synthesis_pb2.AudioChunk(
        sequence_number=seq, audio=bytes(48 * ms), start_ms=start, duration_ms=ms
    )
    return Up(context_id="c1", audio=audio)


def opened_session(clock: Clock, **limits: float) -> tuple[TtsEdgeSession, int]:
    session = new_session(clock, **limits)
    actions = session.client_message(open_msg())
    assert actions.to_client[0].WhichOneof("message") == "session"  # sent on the first message
    key = actions.open_upstream[0].key
    out = session.upstream_response(key, Up(context_id="c1", opened=synthesis_pb2.ContextOpened()))
    assert out.to_client[0].opened.handle == 1
    return session, key


def test_audio_is_paced_to_the_lead_and_acks_never_overtake_it():
    clock = Clock(500.0)
    session, key = opened_session(clock, lead_ms=300)
    sent: list[int] = []
    for seq in range(1, 11):  # 1 s of audio arrives at once (a fast model)
        for item in session.upstream_response(key, chunk(seq, (seq - 1) * 100)).to_client:
            sent.append(unpack(item).sequence_number)  # type: ignore[arg-type]
    flush = Up(
        context_id="c1", flush_ack=synthesis_pb2.FlushAck(flush_id="f", last_sequence_number=10)
    )
    assert session.upstream_response(key, flush).to_client == []  # behind the audio
    assert sent == [1, 2, 3, 4]  # starts 0..300 ms: up to the lead
    clock.now += 0.25
    released = session.on_time().to_client
    assert [unpack(b).sequence_number for b in released] == [5, 6]  # type: ignore[arg-type]
    clock.now += 1.0
    released = session.on_time().to_client
    assert released[-1].WhichOneof("message") == "flush_ack"  # type: ignore[union-attr]
    assert len(released) == 5


def test_after_the_listener_ran_out_of_audio_the_lead_counts_from_where_playback_resumed():
    # A reply streamed in pieces: its next text comes 5 s later (an LLM's pause). The phone
    # line played the 300 ms it had, then nothing; it plays the next audio when it comes, from
    # where it stopped. Counted from the first chunk, that audio was all "due" at once: 1 s
    # went out in one burst, 1 s ahead of the listener instead of the lead.
    clock = Clock(500.0)
    session, key = opened_session(clock, lead_ms=300)
    for seq in range(1, 4):
        assert session.upstream_response(key, chunk(seq, (seq - 1) * 100)).to_client
    clock.now += 5.0
    sent = [
        unpack(item).sequence_number  # type: ignore[arg-type]
        for seq in range(4, 14)
        for item in session.upstream_response(key, chunk(seq, (seq - 1) * 100)).to_client
    ]
    assert sent == [4, 5, 6, 7]  # starts 300..600 ms: playback resumed at 300, plus the lead
    clock.now += 0.25
    released = session.on_time().to_client
    assert [unpack(b).sequence_number for b in released] == [8, 9]  # type: ignore[arg-type]


def test_lead_zero_sends_as_fast_as_the_model():
    clock = Clock(500.0)
    session, key = opened_session(clock, lead_ms=0)
    assert all(
        session.upstream_response(key, chunk(s, (s - 1) * 100)).to_client for s in range(1, 30)
    )


def fill(session: TtsEdgeSession, key: int, cid: str = "c1", limit: int = 1000) -> int:
    """Feed a fast model's 100 ms chunks to context ``key`` while the session lets its upstream
    be read (the runner's rule); returns the chunks read."""
    seq = 0
    while session.has_room(key) and seq < limit:
        seq += 1
        response = chunk(seq, (seq - 1) * 100)
        response.context_id = cid
        session.upstream_response(key, response)
    return seq


def test_a_paced_context_is_read_ahead_to_the_session_budget():
    # 24 kHz PCM16: 4,800 bytes per 100 ms chunk; lead 300 ms; 4 chunks go out at once.
    clock = Clock(500.0)
    session, key = opened_session(clock, lead_ms=300, read_ahead_bytes=200_000)
    read = fill(session, key)
    queued = session.contexts["c1"].queued_bytes
    # Past the context's floor (lead + slack = 1.3 s: 64 KiB), up to the session's budget.
    assert 200_000 <= queued < 200_000 + 4_800
    assert read == 4 + queued // 4_800
    # Playback frees room: 1 s later 10 chunks have gone out, and reading resumes.
    clock.now += 1.0
    assert len(session.on_time().to_client) == 10
    assert session.has_room(key)


def test_without_read_ahead_a_context_reads_only_its_floor():
    clock = Clock(500.0)
    session, key = opened_session(clock, lead_ms=300, read_ahead_bytes=0)
    fill(session, key)
    assert 65_536 <= session.contexts["c1"].queued_bytes < 65_536 + 4_800


def test_a_context_under_its_floor_reads_whatever_the_others_hold():
    clock = Clock(500.0)
    session, first = opened_session(clock, lead_ms=300, read_ahead_bytes=200_000)
    fill(session, first)
    assert not session.has_room(first)  # the session's budget is spent
    second = session.client_message(open_msg("c2")).open_upstream[0].key
    session.upstream_response(second, Up(context_id="c2", opened=synthesis_pb2.ContextOpened()))
    fill(session, second, "c2")
    # The second context got its floor all the same, and no more.
    assert 65_536 <= session.contexts["c2"].queued_bytes < 65_536 + 4_800


def test_the_timer_is_never_due_again_at_the_instant_it_woke():
    # At the deadline next_deadline gives, float rounding could leave the chunk 1e-11 ms short
    # of due: the timer was re-armed for the same instant (500.2 -> 500.2) until time moved.
    clock = Clock(500.0)
    session, key = opened_session(clock, lead_ms=300)
    fill(session, key, limit=60)
    for _ in range(40):
        deadline = session.next_deadline()
        assert deadline > clock.now
        clock.now = deadline
        assert session.on_time().to_client  # a chunk went out at each wake-up


def test_a_closing_context_gets_no_upstream_keepalive():
    clock = Clock(500.0)
    session, key = opened_session(clock, lead_ms=300, upstream_keepalive_s=2)
    fill(session, key, limit=200)  # 20 s of audio, read ahead
    actions = session.client_message(Client(context_id="c1", close=synthesis_pb2.CloseContext()))
    assert actions.half_close == [key]
    for _ in range(4):  # its half-closed call takes no more requests
        clock.now += 2.5
        assert session.on_time().to_upstream == []
        assert session.next_deadline() > clock.now
    opened = session.client_message(open_msg("c2")).open_upstream[0].key
    clock.now += 2.5
    assert [k for k, _ in session.on_time().to_upstream] == [opened]  # an open one does


def test_cancel_names_the_last_chunk_sent_and_nothing_follows():
    clock = Clock(500.0)
    session, key = opened_session(clock, lead_ms=200)
    for seq in range(1, 8):
        session.upstream_response(key, chunk(seq, (seq - 1) * 100))
    actions = session.client_message(Client(context_id="c1", cancel=synthesis_pb2.Cancel()))
    assert actions.to_client[-1].cancelled.last_sequence_number == 3  # type: ignore[union-attr]
    assert actions.cancel_upstream == [key]
    assert session.upstream_response(key, chunk(8, 700)).to_client == []
    clock.now += 5
    assert session.on_time().to_client == []


def test_truncate_returns_the_words_heard():
    clock = Clock(500.0)
    session, key = opened_session(clock, lead_ms=0)
    words = synthesis_pb2.WordTimestamps(
        words=[
            synthesis_pb2.WordTimestamp(word="hello", start_ms=0, end_ms=300),
            synthesis_pb2.WordTimestamp(word="there", start_ms=300, end_ms=700),
        ]
    )
    session.upstream_response(key, Up(context_id="c1", words=words))
    for seq in range(1, 9):
        session.upstream_response(key, chunk(seq, (seq - 1) * 100))
    actions = session.client_message(
        Client(context_id="c1", truncate=tts_pb2.Truncate(played_ms=450))
    )
    truncated = actions.to_client[-1].truncated  # type: ignore[union-attr]
    assert [w.word for w in truncated.heard] == ["hello"]
    assert truncated.last_sequence_number == 8 and actions.cancel_upstream == [key]


def test_failover_reopens_from_the_last_word_sent_with_offsets():
    clock = Clock(500.0)
    session, key = opened_session(clock, lead_ms=0)
    text = "Hello there, how are you?"
    session.client_message(Client(context_id="c1", append=synthesis_pb2.AppendText(text=text)))
    words = synthesis_pb2.WordTimestamps(
        words=[
            synthesis_pb2.WordTimestamp(word="Hello", end_ms=300, text_offset=0, text_length=5),
            synthesis_pb2.WordTimestamp(word="there", end_ms=650, text_offset=6, text_length=5),
        ]
    )
    session.upstream_response(key, Up(context_id="c1", words=words))
    for seq in range(1, 5):
        session.upstream_response(key, chunk(seq, (seq - 1) * 100))
    actions = session.upstream_failed(key, errors.BackendUnavailable("adapter died"))
    assert actions.cancel_upstream == [key]
    (reopen,) = actions.open_upstream
    assert reopen.failover
    config = reopen.requests[0].open
    assert (config.timeline_offset_ms, config.first_sequence_number) == (400, 5)
    assert reopen.requests[1].append.text == " there, how are you?"
    out = session.upstream_response(
        reopen.key, Up(context_id="c1", opened=synthesis_pb2.ContextOpened())
    )
    assert out.to_client[0].notice.kind == out.to_client[0].notice.KIND_FAILOVER  # type: ignore[union-attr]


def test_an_ssml_failover_speaks_the_document_again_and_the_client_gets_each_sample_once():
    # Before, the reopened context got the text after the last word sent, which for SSML is
    # no document (`two.</speak>`): SSML_INVALID ended the context the failover was to save.
    clock = Clock(500.0)
    session = new_session(clock, lead_ms=0)
    msg = open_msg()
    msg.open.text_format = synthesis_pb2.TEXT_FORMAT_SSML
    key = session.client_message(msg).open_upstream[0].key
    session.upstream_response(key, Up(context_id="c1", opened=synthesis_pb2.ContextOpened()))
    first, second = "<speak>One.</speak>", "<speak>Two <break/> three.</speak>"
    for message in (
        Client(context_id="c1", append=synthesis_pb2.AppendText(text=first)),
        Client(context_id="c1", flush=synthesis_pb2.Flush(flush_id="f1")),
        Client(context_id="c1", append=synthesis_pb2.AppendText(text=second)),
        Client(context_id="c1", flush=synthesis_pb2.Flush(flush_id="f2")),
    ):
        session.client_message(message)
    session.upstream_response(key, chunk(1, 0))
    ack = Up(context_id="c1", flush_ack=synthesis_pb2.FlushAck(flush_id="f1"))
    session.upstream_response(key, ack)
    sent = [session.upstream_response(key, chunk(seq, (seq - 1) * 100)) for seq in (2, 3, 4)]
    assert [unpack(a.to_client[0]).sequence_number for a in sent] == [2, 3, 4]  # type: ignore[arg-type]
    actions = session.upstream_failed(key, errors.BackendUnavailable("adapter died"))
    (reopen,) = actions.open_upstream
    config = reopen.requests[0].open
    # The second document again, from where it began on the timeline, less what was sent.
    assert (config.timeline_offset_ms, config.skip_audio_ms, config.first_sequence_number) == (
        100,
        300,
        5,
    )
    assert [r.WhichOneof("request") for r in reopen.requests[1:]] == ["append", "flush"]
    assert reopen.requests[1].append.text == second and reopen.requests[2].flush.flush_id == "f2"
    session.upstream_response(reopen.key, Up(context_id="c1", opened=synthesis_pb2.ContextOpened()))
    # An adapter that sends it again anyway (without synthesis_skip_audio), in chunks of
    # 120 ms numbered from 5: 100-340 was sent before, 340-400 of the third is cut.
    out = [
        session.upstream_response(reopen.key, chunk(seq, 100 + (seq - 5) * 120, 120))
        for seq in (5, 6, 7, 8)
    ]
    assert [a.to_client for a in out[:2]] == [[], []]
    frames = [unpack(a.to_client[0]) for a in out[2:]]  # type: ignore[arg-type]
    assert [(f.sequence_number, f.start_ms) for f in frames] == [(5, 400), (6, 460)]
    assert [len(f.audio) for f in frames] == [48 * 60, 48 * 120]


def test_context_errors_end_only_that_context():
    clock = Clock(500.0)
    session, _ = opened_session(clock)
    actions = session.client_message(Client(context_id="zz", flush=synthesis_pb2.Flush()))
    assert actions.to_client[0].context_error.error.reason == "UNKNOWN_CONTEXT"  # type: ignore[union-attr]
    actions = session.client_message(open_msg("c1"))
    assert actions.to_client[0].context_error.error.reason == "CONTEXT_ALREADY_OPEN"  # type: ignore[union-attr]
    # As on the adapter: a bad message for a context ends that context, and only it.
    assert actions.close is None and "c1" not in session.contexts
    assert session.client_message(open_msg("c1")).open_upstream


def test_too_many_contexts_and_handles_are_reused():
    clock = Clock(500.0)
    session = new_session(clock, max_contexts=2)
    session.client_message(open_msg("a"))
    session.client_message(open_msg("b"))
    refused = session.client_message(open_msg("c"))
    assert refused.to_client[0].context_error.error.reason == "TOO_MANY_CONTEXTS"  # type: ignore[union-attr]
    session.client_message(Client(context_id="a", cancel=synthesis_pb2.Cancel()))
    session.client_message(open_msg("c"))
    assert session.contexts["c"].handle == 1


def test_close_session_waits_for_done_then_summary():
    clock = Clock(500.0)
    session, key = opened_session(clock, lead_ms=0)
    actions = session.client_message(Client(close_session=tts_pb2.CloseSession()))
    assert actions.half_close == [key] and actions.close is None
    session.upstream_response(key, chunk(1, 0))
    done = Up(context_id="c1", done=synthesis_pb2.ContextDone(last_sequence_number=1, audio_ms=100))
    actions = session.upstream_response(key, done)
    kinds = [m.WhichOneof("message") for m in actions.to_client]  # type: ignore[union-attr]
    assert kinds == ["done", "summary"]
    assert actions.close is not None and actions.close.code == 1000
    assert actions.to_client[-1].summary.audio_ms == 100  # type: ignore[union-attr]


def test_after_a_resume_the_summary_counts_this_connection_only():
    # What docs/edge.md ("Resume", TTS) promises of the summary of a resumed connection: the
    # gateway knows nothing of the session's earlier connections (the token holds its options
    # only), so audioMs is this connection's audio, from a reopened context's timelineOffsetMs
    # on; contexts counts the reopened one; resumes is 1, not the number of reconnects.
    clock = Clock(500.0)
    session = new_session(clock, lead_ms=0)
    session.start(tts_pb2.TtsStart(), session_id="t0", resumes=1)  # as sessions.tts_start does
    reopen = open_msg()
    reopen.open.timeline_offset_ms = 1000  # 1 s of this context came on the lost connection
    reopen.open.first_sequence_number = 11
    key = session.client_message(reopen).open_upstream[0].key
    session.upstream_response(key, Up(context_id="c1", opened=synthesis_pb2.ContextOpened()))
    session.client_message(Client(close_session=tts_pb2.CloseSession()))
    first = session.upstream_response(key, chunk(11, 1000)).to_client[0]
    assert unpack(first).start_ms == 1000  # type: ignore[arg-type]
    done = Up(context_id="c1", done=synthesis_pb2.ContextDone(last_sequence_number=11))
    summary = session.upstream_response(key, done).to_client[-1].summary  # type: ignore[union-attr]
    assert (summary.session_id, summary.audio_ms, summary.contexts, summary.resumes) == (
        "t0",
        100,
        1,
        1,
    )


def test_json_delivery_sends_audio_messages():
    clock = Clock(500.0)
    session = new_session(clock)
    session.start(tts_pb2.TtsStart(audio_delivery=tts_pb2.AUDIO_DELIVERY_JSON))
    key = session.client_message(open_msg()).open_upstream[0].key
    out = session.upstream_response(key, chunk(1, 0)).to_client
    assert out[0].audio.sequence_number == 1  # type: ignore[union-attr]


def test_a_listening_client_is_not_idle():
    clock = Clock(500.0)
    session, key = opened_session(clock, lead_ms=100, idle_timeout_s=3, idle_warning_s=1)
    for seq in range(1, 60):
        session.upstream_response(key, chunk(seq, (seq - 1) * 100))
    for _ in range(50):  # 5 s of paced playback, no client message
        clock.now += 0.1
        assert session.on_time().close is None
    clock.now += 10
    assert session.on_time().close is None  # the rest of the audio goes out now
    clock.now += 3
    actions = session.on_time()
    assert actions.close is not None and actions.close.code == 4008


def test_start_after_a_message_is_refused():
    clock = Clock(500.0)
    session, _ = opened_session(clock)
    with pytest.raises(errors.ConfigAlreadySet):
        session.client_message(Client(start=tts_pb2.TtsStart()))


def test_what_follows_close_session_is_discarded_and_the_context_still_finishes():
    # A context message after closeSession used to fail the session (1008): the open
    # contexts lost their audio, done and the summary. It is discarded unread now.
    clock = Clock(500.0)
    session, key = opened_session(clock, lead_ms=0)
    session.client_message(Client(close_session=tts_pb2.CloseSession()))
    assert session.input_ended
    for stray in (
        Client(context_id="c1", append=synthesis_pb2.AppendText(text="more")),
        open_msg("c2"),
        Client(close_session=tts_pb2.CloseSession()),
        Client(),
    ):
        actions = session.client_message(stray)
        assert not actions.to_client and not actions.to_upstream and actions.close is None
    session.upstream_response(key, chunk(1, 0))
    done = Up(context_id="c1", done=synthesis_pb2.ContextDone(last_sequence_number=1, audio_ms=100))
    actions = session.upstream_response(key, done)
    assert [m.WhichOneof("message") for m in actions.to_client] == ["done", "summary"]  # type: ignore[union-attr]
    assert actions.close is not None and actions.close.code == 1000


@pytest.mark.parametrize("lead_s", [-5, 99_999_999, 10.001])
def test_a_lead_outside_its_bounds_is_invalid_config(lead_s):
    # A context's floor grows with its lead: "99999999s" let a slow reader make the gateway
    # hold a long text's whole audio; "-5s" was taken as 0. Both are refused now.
    start = tts_pb2.TtsStart()
    start.lead.FromMilliseconds(round(lead_s * 1000))
    with pytest.raises(errors.InvalidConfig) as raised:
        new_session(Clock(500.0)).start(start)
    assert raised.value.violations[0].field == "lead"


def test_the_largest_lead_is_taken():
    start = tts_pb2.TtsStart()
    start.lead.FromMilliseconds(10_000)
    session = new_session(Clock(500.0))
    session.start(start)
    assert session.lead_ms == 10_000


def test_an_open_of_a_closed_context_still_speaking_ends_it_with_already_open():
    """docs/edge.md: ``close`` ends a context's text, not the context; reopening its id before
    its ``done`` is that context's error, and the session goes on."""
    clock = Clock(500.0)
    session, key = opened_session(clock)
    session.client_message(Client(context_id="c1", close=synthesis_pb2.CloseContext()))
    assert "c1" in session.contexts  # closed for text, still speaking
    actions = session.client_message(open_msg("c1"))
    assert actions.to_client[0].context_error.error.reason == "CONTEXT_ALREADY_OPEN"  # type: ignore[union-attr]
    assert key in actions.cancel_upstream and actions.close is None
    assert "c1" not in session.contexts
    assert session.client_message(open_msg("c1")).open_upstream  # the id is free again


def _idle_error(actions) -> str | None:  # type: ignore[no-untyped-def]
    for m in actions.to_client:
        if not isinstance(m, bytes) and m.WhichOneof("message") == "error":
            return str(m.error.reason)
    return None


def test_a_client_waiting_for_a_flush_or_a_close_is_not_idle():
    # docs/contract.md, idle_timeout: "a stream whose client waits for the server is not idle
    # (TTS synthesis queued or under way)". Before, the idle timer ran from the last client
    # message or audio chunk only: a flush whose audio waited longer than idle_timeout_s at
    # the adapter was closed IDLE_TIMEOUT.
    clock = Clock(500.0)
    session, key = opened_session(clock, lead_ms=0, idle_timeout_s=30, idle_warning_s=5)
    session.client_message(Client(context_id="c1", append=synthesis_pb2.AppendText(text="Hi.")))
    session.client_message(Client(context_id="c1", flush=synthesis_pb2.Flush(flush_id="f1")))
    for _ in range(10):  # synthesis queued for 100 s, no audio; the upstream kept alive
        clock.now += 10
        actions = session.on_time()
        assert actions.to_client == [] and actions.to_upstream and not session.ended
    # The audio and the ack come: the idle time counts from the ack.
    session.upstream_response(key, chunk(1, 0))
    ack = synthesis_pb2.FlushAck(flush_id="f1", last_sequence_number=1)
    out = session.upstream_response(key, Up(context_id="c1", flush_ack=ack))
    assert [m.WhichOneof("message") for m in out.to_client] == ["flush_ack"]  # type: ignore[union-attr]
    clock.now += 29.9
    assert _idle_error(session.on_time()) is None  # the warning only
    clock.now += 0.2
    assert _idle_error(session.on_time()) == "IDLE_TIMEOUT"


def test_appended_text_without_a_flush_is_not_waited_for():
    # The model may hold text for more: the client owes the next message, and the idle timer
    # runs (the gateway keeps the upstream call alive meanwhile).
    clock = Clock(500.0)
    session, _ = opened_session(clock, lead_ms=0, idle_timeout_s=30, idle_warning_s=5)
    session.client_message(Client(context_id="c1", append=synthesis_pb2.AppendText(text="Hi")))
    clock.now += 30.1
    assert _idle_error(session.on_time()) == "IDLE_TIMEOUT"


def test_a_closed_context_is_waited_for_until_its_done_or_its_error():
    clock = Clock(500.0)
    session, key = opened_session(clock, lead_ms=0, idle_timeout_s=30, idle_warning_s=5)
    session.client_message(Client(context_id="c1", close=synthesis_pb2.CloseContext()))
    clock.now += 100
    assert _idle_error(session.on_time()) is None and not session.ended
    failed = session.upstream_failed(key, errors.TextTooLarge("the text is over the model's limit"))
    assert [m.WhichOneof("message") for m in failed.to_client] == ["context_error"]  # type: ignore[union-attr]
    assert session.next_deadline() == pytest.approx(clock.now + 25)


def test_a_context_the_model_does_not_make_is_asked_in_its_format_and_converted():
    # Client: 8 kHz mu-law (a phone bridge); model: 16 kHz PCM16 only. The model is asked its
    # own format, on the first call and on a failover's; the client gets its own, each chunk
    # with its number and place; what the failed call's resampler held is not sent.
    made = audio_pb2.AudioFormat(
        encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=16000, channels=1
    )
    clock = Clock(500.0)
    session = TtsEdgeSession(
        TtsLimits(lead_ms=0),
        session_id="t1",
        issue_token=lambda options, *_: ("tok", 2e9),
        clock=clock,
        fit=lambda config: made,
    )
    phone = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_MULAW, sample_rate_hz=8000)
    opening = session.client_message(
        Client(context_id="c1", open=synthesis_pb2.SynthesisContextConfig(output_format=phone))
    )
    (first,) = opening.open_upstream
    assert first.requests[0].open.output_format.sample_rate_hz == 16000
    assert first.requests[0].open.output_format.encoding == audio_pb2.AUDIO_ENCODING_PCM_S16LE
    session.upstream_response(first.key, Up(context_id="c1", opened=synthesis_pb2.ContextOpened()))
    session.client_message(Client(context_id="c1", append=synthesis_pb2.AppendText(text="Hi.")))
    frames = []
    for seq in range(1, 11):
        audio = synthesis_pb2.AudioChunk(
            sequence_number=seq, audio=bytes(3200), start_ms=(seq - 1) * 100, duration_ms=100
        )
        out = session.upstream_response(first.key, Up(context_id="c1", audio=audio))
        frames += [unpack(b) for b in out.to_client if isinstance(b, bytes)]
    assert frames and all(len(f.audio) == 800 for f in frames)  # 100 ms of 8 kHz mu-law
    assert [(f.sequence_number, f.start_ms) for f in frames] == [
        (i + 1, i * 100) for i in range(len(frames))
    ]
    assert len(frames) < 10  # the resampler holds the last ones back until a flush or done
    actions = session.upstream_failed(first.key, errors.BackendUnavailable("adapter died"))
    (reopen,) = actions.open_upstream
    config = reopen.requests[0].open
    assert config.output_format.sample_rate_hz == 16000
    assert (config.timeline_offset_ms, config.first_sequence_number) == (
        100 * len(frames),
        len(frames) + 1,
    )
    assert session.contexts["c1"].converter is not None
    assert session.contexts["c1"].converter.held == 0


def test_messages_after_a_close_are_answered_after_done_and_cost_no_audio():
    # They failed the closing context ("close after the context's close"): its audio was
    # dropped. It finishes; each late kind is answered after its done, as for a context gone.
    clock = Clock(500.0)
    session, key = opened_session(clock, lead_ms=0)
    session.client_message(Client(context_id="c1", close=synthesis_pb2.CloseContext()))
    for late in (
        Client(context_id="c1", close=synthesis_pb2.CloseContext()),
        Client(context_id="c1", append=synthesis_pb2.AppendText(text="more")),
        Client(context_id="c1", append=synthesis_pb2.AppendText(text="and more")),
    ):
        assert session.client_message(late).to_client == []
    assert session.upstream_response(key, chunk(1, 0)).to_client  # the audio still flows
    done = Up(context_id="c1", done=synthesis_pb2.ContextDone(last_sequence_number=1, audio_ms=100))
    out = session.upstream_response(key, done).to_client
    kinds = [m.WhichOneof("message") for m in out]  # type: ignore[union-attr]
    assert kinds == ["done", "context_error", "context_error"], kinds
    reasons = [m.context_error.error.reason for m in out[1:]]  # type: ignore[union-attr]
    assert reasons == ["CONTEXT_NOT_OPEN", "UNKNOWN_CONTEXT"], reasons
    assert "2 append messages after its close" in out[1].context_error.error.message  # type: ignore[union-attr]
