"""voxwire.client.SynthesisSession against the real gateway, adapter and eSpeak NG."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers.edge import Edge
from tests.helpers.long_text import long_text
from voxwire import errors
from voxwire.client import ContextEvent, SynthesisSession, SynthesizedAudio
from voxwire.edge.v1 import tts_pb2
from voxwire.v1 import audio_pb2, synthesis_pb2

pytestmark = pytest.mark.asyncio(loop_scope="session")

RATE = 22050
TEXT = "Hello from the voxwire gateway. This is a second sentence to speak."


def tts_config(model: str = "tts_espeak") -> synthesis_pb2.SynthesisContextConfig:
    return synthesis_pb2.SynthesisContextConfig(
        model=model,
        word_timestamps=True,
        output_format=audio_pb2.AudioFormat(
            encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=RATE
        ),
    )


async def speak(edge: Edge, text: str, **connect: object) -> list[ContextEvent]:
    async with asyncio.timeout(30):
        tts = await SynthesisSession.connect(edge.ws, api_key=edge.key, lead_ms=0, **connect)  # type: ignore[arg-type]
        ctx = await tts.open("c1", tts_config())
        await ctx.append(text)
        flush_id = await ctx.flush()
        await ctx.close()
        events = [e async for e in ctx]
        summary = await tts.close()
    assert summary.contexts == 1
    acks = [e for e in events if isinstance(e, synthesis_pb2.FlushAck)]
    assert [a.flush_id for a in acks] == [flush_id]
    return events


def assert_tiles(chunks: list[SynthesizedAudio]) -> None:
    assert [c.sequence_number for c in chunks] == list(range(1, len(chunks) + 1))
    position = 0
    for chunk in chunks:
        # Exactly (docs/contract.md): binary frames carry no duration, and the SDK's, rounded
        # from each frame's bytes alone, left 1 ms gaps and overlaps on either side.
        assert chunk.start_ms == position, (chunk.start_ms, position)
        assert abs(chunk.duration_ms - len(chunk.audio) * 1000 / (RATE * 2)) <= 1
        position = chunk.start_ms + chunk.duration_ms


@pytest.mark.parametrize("delivery", ["binary", "json"])
async def test_a_context_speaks_in_tiling_chunks_then_done(edge: Edge, delivery: str):
    events = await speak(edge, TEXT, audio_delivery=delivery)
    assert isinstance(events[0], tts_pb2.ContextOpened)
    assert isinstance(events[-1], synthesis_pb2.ContextDone)
    chunks = [e for e in events if isinstance(e, SynthesizedAudio)]
    assert_tiles(chunks)
    done = events[-1]
    assert done.last_sequence_number == len(chunks)
    assert done.audio_ms == sum(c.duration_ms for c in chunks)
    words = [
        w.word.lower()
        for e in events
        if isinstance(e, synthesis_pb2.WordTimestamps)
        for w in e.words
    ]
    assert "voxwire" in words and words[0] == "hello"


async def test_cancel_ends_the_context_with_cancelled(edge: Edge):
    async with asyncio.timeout(30):
        tts = await SynthesisSession.connect(edge.ws, api_key=edge.key, lead_ms=200)
        ctx = await tts.open("c1", tts_config())
        await ctx.append(TEXT * 3)
        await ctx.close()
        events: list[ContextEvent] = []
        async for event in ctx:
            events.append(event)
            if isinstance(event, SynthesizedAudio) and event.sequence_number == 3:
                await ctx.cancel()
        await tts.close()
    cancelled = events[-1]
    assert isinstance(cancelled, synthesis_pb2.ContextCancelled)
    chunks = [e for e in events if isinstance(e, SynthesizedAudio)]
    assert cancelled.last_sequence_number == chunks[-1].sequence_number


async def test_a_context_error_raises_its_typed_error_and_the_session_goes_on(edge: Edge):
    async with asyncio.timeout(30):
        tts = await SynthesisSession.connect(edge.ws, api_key=edge.key, lead_ms=0)
        bad = await tts.open("bad", tts_config(model="no_such_model"))
        with pytest.raises(errors.UnknownModel):
            async for _ in bad:
                pass
        good = await tts.open("good", tts_config())
        await good.append("Still here.")
        await good.close()
        assert await good.audio()
        await tts.close()


@pytest.mark.parametrize("context_id", ["", "x" * 129, "é" * 65])
async def test_a_context_id_out_of_bounds_is_refused_and_the_session_goes_on(
    edge: Edge, context_id: str
):
    # The id went to the gateway, which refused it INVALID_MESSAGE for the whole session:
    # every other context of the session failed with it.
    async with asyncio.timeout(30):
        tts = await SynthesisSession.connect(edge.ws, api_key=edge.key, lead_ms=0)
        good = await tts.open("good", tts_config())
        await good.append("Still here.")
        with pytest.raises(errors.InvalidMessage, match="1 to 128 bytes"):
            await tts.open(context_id, tts_config())
        await good.close()
        assert await good.audio()
        assert (await tts.close()).contexts == 1


async def test_truncate_ends_the_context_with_the_words_heard(edge: Edge):
    async with asyncio.timeout(30):
        tts = await SynthesisSession.connect(edge.ws, api_key=edge.key, lead_ms=300)
        ctx = await tts.open("c1", tts_config())
        await ctx.append(TEXT * 3)
        await ctx.close()
        events: list[ContextEvent] = []
        async for event in ctx:
            events.append(event)
            if isinstance(event, SynthesizedAudio) and event.sequence_number == 12:
                await ctx.truncate(900)
        await tts.close()
    truncated = events[-1]
    assert isinstance(truncated, tts_pb2.Truncated) and truncated.played_ms == 900
    # The gateway's heard words and the SDK's own rule for them agree.
    assert [w.word for w in truncated.heard] == [w.word for w in ctx.heard(900)]
    assert truncated.heard and all(w.end_ms <= 900 for w in truncated.heard)


async def test_a_barge_in_after_done_stops_nothing_and_heard_says_what_was_heard(edge: Edge):
    # Audio runs ahead of playback, so `done` comes while the last of it still plays: the
    # agent's barge-in then finds the context ended. It raised UnknownContext.
    async with asyncio.timeout(30):
        tts = await SynthesisSession.connect(edge.ws, api_key=edge.key, lead_ms=0)
        ctx = await tts.open("c1", tts_config())
        await ctx.append(TEXT)
        await ctx.close()
        events = [e async for e in ctx]
        assert isinstance(events[-1], synthesis_pb2.ContextDone)
        await ctx.truncate(1500)
        await ctx.cancel()
        with pytest.raises(errors.InvalidMessage, match="played_ms"):
            await ctx.truncate(-1)
        with pytest.raises(errors.UnknownContext):
            await ctx.append("more")  # text for an ended context is still a mistake
        next_turn = await tts.open("c2", tts_config())
        await next_turn.append("The session goes on.")
        await next_turn.close()
        assert await next_turn.audio()
        summary = await tts.close()
    words = [w for e in events if isinstance(e, synthesis_pb2.WordTimestamps) for w in e.words]
    heard = ctx.heard(1500)
    assert heard == [w for w in words if w.end_ms <= 1500] and 0 < len(heard) < len(words)
    assert [w.word for w in ctx.heard(10**6)] == [w.word for w in words]
    assert summary.contexts == 2


async def test_text_longer_than_a_context_holds_goes_in_pieces_behind_which_flush_and_close_wait(
    edge: Edge,
):
    # One append of more than the 16 KiB a context holds unsynthesized failed TEXT_TOO_LARGE
    # (`voxwire speak` of a chapter did); it now goes in pieces as the server speaks them, and
    # what the client gives after it (a flush, more text, the close) follows in its order.
    text = long_text(24)
    assert len(text.encode()) > 16 * 1024
    async with asyncio.timeout(60):
        tts = await SynthesisSession.connect(edge.ws, api_key=edge.key, lead_ms=0)
        ctx = await tts.open("long", tts_config("bench_tts"))
        await ctx.append(text)
        assert ctx.feeding  # pieces wait for the first ones to be spoken
        flush_id = await ctx.flush()
        await ctx.append(" tail end.")
        await ctx.close()
        with pytest.raises(errors.InvalidMessage, match="closed"):
            await ctx.append("more")
        events = [e async for e in ctx]
        summary = await tts.close()
    assert summary.contexts == 1 and not ctx.feeding
    assert isinstance(events[-1], synthesis_pb2.ContextDone)
    assert_tiles([e for e in events if isinstance(e, SynthesizedAudio)])
    words = [w for e in events if isinstance(e, synthesis_pb2.WordTimestamps) for w in e.words]
    whole = text + " tail end."
    spoken = [whole[w.text_offset : w.text_offset + w.text_length].rstrip(".") for w in words]
    assert spoken == [part.rstrip(".") for part in whole.split()]
    # Only the client's own flush is passed on, after the audio of all the text before it.
    acks = [i for i, e in enumerate(events) if isinstance(e, synthesis_pb2.FlushAck)]
    assert [events[i].flush_id for i in acks] == [flush_id]
    last_long_word = next(
        i
        for i, e in enumerate(events)
        if isinstance(e, synthesis_pb2.WordTimestamps)
        and any(w.text_offset + w.text_length >= len(text) - 1 for w in e.words)
    )
    assert last_long_word < acks[0]


async def test_an_ssml_document_longer_than_a_piece_goes_whole(edge: Edge):
    # An SSML document is one unit of markup. The SDK cut any text over a piece into pieces,
    # SSML too: the server got half a document, "SSML_INVALID: malformed XML: no element
    # found", for a well-formed document of 4,605 bytes (pieces of 4 KiB).
    document = "<speak>" + "<s>Hello there.</s>" * 60 + "</speak>"  # 1,154 bytes
    async with asyncio.timeout(60):
        tts = await SynthesisSession.connect(edge.ws, api_key=edge.key, lead_ms=0)
        tts.piece_bytes = 512
        config = tts_config()
        config.text_format = synthesis_pb2.TEXT_FORMAT_SSML
        ctx = await tts.open("doc", config)
        await ctx.append(document)
        await ctx.close()
        events = [e async for e in ctx]
        await tts.close()
    assert isinstance(events[-1], synthesis_pb2.ContextDone), events[-1]
    words = [w for e in events if isinstance(e, synthesis_pb2.WordTimestamps) for w in e.words]
    assert len(words) == 120, len(words)
