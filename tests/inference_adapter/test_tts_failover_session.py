"""A TTS context moved to another replica, without any network: the unit in flight is
submitted again and what the client already has of it is not sent twice
(docs/contract.md, "Failover")."""

from __future__ import annotations

import numpy as np
import pytest

from inference_adapter.triton.tensors import ModelResponse
from tests.inference_adapter.test_tts_session import new_session, open_msg, opened
from voxwire.v1 import stream_pb2, synthesis_pb2

Req = synthesis_pb2.StreamingSynthesizeRequest
RATE = 16000
TEXT = "w0 w1 w2. "


def tone(first: int, count: int) -> np.ndarray:
    """Samples that say where they are in the unit (a deterministic model's output)."""
    return (np.arange(first, first + count) % 30000).astype(np.int16)


def response(first: int, count: int, *, words=(), final=False) -> ModelResponse:
    events: tuple[dict, ...] = ({"type": "words", "words": list(words)},) if words else ()
    if final:
        events += ({"type": "done", "samples": first + count},)
    return ModelResponse(events=events, compute_us=10, audio=tone(first, count), final=final)


def word(i: int) -> dict:
    """Word i of the unit: 100 ms each, text "wN " at offset 3i."""
    return {
        "word": f"w{i}",
        "start_ms": i * 100,
        "end_ms": (i + 1) * 100,
        "text_offset": 3 * i,
        "text_length": 2,
    }


# The unit's model responses: (first sample, count, words, final).
UNIT = [
    (0, 1600, [word(0)], False),
    (1600, 1600, [word(1)], False),
    (3200, 1600, [word(2)], False),
    (4800, 800, [], True),
]


def synthesize(session, ctx, chunks):
    out = []
    for first, count, words, final in chunks:
        out += session.model_response(
            ctx.key, response(first, count, words=words, final=final)
        ).to_client
    return out


def audio(responses) -> bytes:
    return b"".join(r.audio.audio for r in responses if r.HasField("audio"))


def words(responses) -> list[tuple[str, int, int, int]]:
    return [
        (w.word, w.start_ms, w.end_ms, w.text_offset)
        for r in responses
        if r.HasField("words")
        for w in r.words.words
    ]


@pytest.mark.parametrize("rate", [RATE, 24000])  # as the model gives it, and resampled
def test_a_resubmitted_unit_continues_after_the_last_sample_sent(rate):
    reference_session = new_session()
    chunks = UNIT
    ctx = opened(reference_session, "c", rate)
    reference_session.receive(Req(context_id="c", append=synthesis_pb2.AppendText(text=TEXT)))
    expected = synthesize(reference_session, ctx, chunks)

    session = new_session()
    ctx = opened(session, "c", rate)
    submitted = session.receive(Req(context_id="c", append=synthesis_pb2.AppendText(text=TEXT)))
    (_, unit) = submitted.submit[0]
    before = synthesize(session, ctx, chunks[:2])
    # The replica fails after two chunks; the new one starts the unit again from its start.
    moved = session.failed_over(ctx, "r1")
    (notice,) = moved.to_client
    assert notice.notice.kind == stream_pb2.StreamNotice.KIND_FAILOVER
    assert notice.notice.replica == "r1" and notice.context_id == "c"
    assert moved.submit == [(ctx, unit)]
    again = [(0, 2400, [word(0)], False), (2400, 3200, [word(1), word(2)], True)]
    got = before + synthesize(session, ctx, again)
    # The client gets exactly what a run without the fault gets: every sample once, the same
    # sequence numbers, timeline and words (other chunk boundaries do not matter).
    assert audio(got) == audio(expected)
    assert words(got) == words(expected)
    seqs = [r.audio.sequence_number for r in got if r.HasField("audio")]
    assert seqs == list(range(1, len(seqs) + 1))
    chunks_out = [r.audio for r in got if r.HasField("audio")]
    for a, b in zip(chunks_out, chunks_out[1:], strict=False):
        assert b.start_ms == a.start_ms + a.duration_ms


def test_an_idle_context_moves_with_a_notice_and_nothing_to_submit():
    session = new_session()
    ctx = opened(session, "c")
    moved = session.failed_over(ctx, "r1")
    assert [r.WhichOneof("response") for r in moved.to_client] == ["notice"]
    assert moved.submit == []
    assert ctx.failovers == 0  # nothing was in flight, nothing to count


def test_failovers_without_new_audio_are_counted_and_audio_resets_them():
    session = new_session()
    ctx = opened(session, "c")
    session.receive(Req(context_id="c", append=synthesis_pb2.AppendText(text="w0 w1. ")))
    session.failed_over(ctx, "r1")
    session.failed_over(ctx, "r2")
    assert ctx.failovers == 2
    session.model_response(ctx.key, response(0, 1600, final=False))
    assert ctx.failovers == 0


def test_a_resubmitted_unit_needs_its_own_done():
    # The failed replica's `done` (sent before its answer broke) does not end the survivor's:
    # a survivor that ends the unit without one fails the context, naming the last chunk sent.
    session = new_session()
    ctx = opened(session, "c")
    session.receive(Req(context_id="c", append=synthesis_pb2.AppendText(text=TEXT)))
    done = ModelResponse(
        events=({"type": "done", "samples": 1600},),
        compute_us=10,
        audio=tone(0, 1600),
        final=False,
    )
    sent = session.model_response(ctx.key, done).to_client
    session.failed_over(ctx, "r1")
    ended = ModelResponse(events=(), compute_us=10, audio=tone(0, 3200), final=True)
    out = session.model_response(ctx.key, ended).to_client
    (error,) = [r for r in out if r.HasField("error")]
    assert error.error.last_sequence_number == len([r for r in sent if r.HasField("audio")])
    assert not any(r.HasField("audio") for r in out)


def test_a_failover_of_a_context_opened_with_skip_audio_ms_sends_nothing_twice():
    # skip_audio_ms (an SSML document resumed whole) drops the first 150 ms, word w0 with it;
    # the replica then fails after w1's first chunk. The words skipped by time must not use up
    # the failover's count of words passed on: before, w0 did, and w1 came twice.
    reference_session = new_session()
    chunks = UNIT
    ctx = opened(reference_session, "c")
    reference_session.receive(Req(context_id="c", append=synthesis_pb2.AppendText(text=TEXT)))
    whole = synthesize(reference_session, ctx, chunks)

    session = new_session()
    msg = open_msg("c")
    msg.open.timeline_offset_ms, msg.open.first_sequence_number = 1000, 5
    msg.open.skip_audio_ms = 150
    (ctx,) = session.receive(msg).open
    session.opened(ctx, "r0")
    session.receive(Req(context_id="c", append=synthesis_pb2.AppendText(text=TEXT)))
    before = synthesize(session, ctx, chunks[:2])
    session.failed_over(ctx, "r1")
    again = [(0, 2400, [word(0)], False), (2400, 3200, [word(1), word(2)], True)]
    got = before + synthesize(session, ctx, again)
    assert audio(got) == audio(whole)[150 * 16 * 2 :]  # 16 kHz PCM16
    assert words(got) == [(w, s + 1000, e + 1000, o) for w, s, e, o in words(whole)[1:]]
    chunks_out = [r.audio for r in got if r.HasField("audio")]
    assert [c.sequence_number for c in chunks_out] == list(range(5, 5 + len(chunks_out)))
    assert chunks_out[0].start_ms == 1150
    for a, b in zip(chunks_out, chunks_out[1:], strict=False):
        assert b.start_ms == a.start_ms + a.duration_ms
