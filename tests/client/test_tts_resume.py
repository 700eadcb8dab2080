"""TTS sessions survive a gateway's SIGKILL: the SDK reopens the unfinished context on the
other gateway process, its timeline and sequence numbers continuing, with the text after the
last word it heard completely (docs/design/edge.md, "Resume (TTS)"). The session authenticates
with browser tokens, one fetched per connection."""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.client.conftest import OPTIONS
from tests.client.helpers import ORIGIN
from tests.client.test_tts_client import RATE, tts_config
from tests.helpers.edge import Edge
from tests.helpers.gateway_process import GatewayProcess
from tests.helpers.long_text import long_text
from voxwire.client import ContextEvent, Resumed, SynthesisSession, SynthesizedAudio, token_fetcher
from voxwire.edge.v1 import tts_pb2
from voxwire.v1 import synthesis_pb2

pytestmark = pytest.mark.asyncio(loop_scope="session")

TEXT = (
    "Hello from the voxwire gateway. This is a second sentence to speak. "
    "And here is a third one, somewhat longer than the others."
)


def spoken_words(events: list[ContextEvent]) -> list[synthesis_pb2.WordTimestamp]:
    return [w for e in events if isinstance(e, synthesis_pb2.WordTimestamps) for w in e.words]


async def test_sigkill_mid_context_reopens_it_on_the_other_gateway(
    edge: Edge, gateways: tuple[GatewayProcess, GatewayProcess], origin_key: str
):
    a, b = gateways
    fetch = token_fetcher(edge.ws, origin_key, origin=ORIGIN)
    tokens = 0

    async def provider() -> str:
        nonlocal tokens
        tokens += 1
        return await fetch()

    events: list[ContextEvent] = []
    async with asyncio.timeout(40):
        tts = await SynthesisSession.connect(
            [a.ws, b.ws], token_provider=provider, origin=ORIGIN, lead_ms=300, options=OPTIONS
        )
        session_events = asyncio.create_task(anext(aiter(tts.events())))
        ctx = await tts.open("c1", tts_config())
        await ctx.append(TEXT)
        await ctx.close()
        async for event in ctx:
            events.append(event)
            if isinstance(event, SynthesizedAudio) and event.sequence_number == 8:
                a.signal(signal.SIGKILL)
        resumed = await session_events
        await tts.close()
    assert isinstance(resumed, Resumed) and resumed.url.startswith(b.ws)
    assert tokens == 2  # a fresh single-use token for the second connection
    chunks = [e for e in events if isinstance(e, SynthesizedAudio)]
    assert [c.sequence_number for c in chunks] == list(range(1, len(chunks) + 1))
    position = 0
    for chunk in chunks:  # the timeline continues across the resume
        assert abs(chunk.start_ms - position) <= 1, (chunk.start_ms, position)
        position = chunk.start_ms + chunk.duration_ms
    assert isinstance(events[-1], synthesis_pb2.ContextDone)
    assert events[-1].last_sequence_number == chunks[-1].sequence_number
    # Every word once, in order, each where it is in the text.
    words = spoken_words(events)
    assert [w.word for w in words] == TEXT.replace(",", "").replace(".", "").split()
    for word in words:
        assert TEXT[word.text_offset : word.text_offset + word.text_length] == word.word
    ends = [w.end_ms for w in words]
    # Within the same 1 ms as the chunks' starts: whole milliseconds on either side of the
    # resume (CI once had the last word end at 6,548 ms and the audio at 6,547).
    assert ends == sorted(ends) and ends[-1] <= position + 1, (ends[-1], position)
    print(f"TTS SIGKILL: resumed in {resumed.downtime_s * 1000:.0f} ms")


async def test_a_barge_in_lost_with_the_gateway_is_not_undone_by_the_resume(
    edge: Edge, gateways: tuple[GatewayProcess, GatewayProcess], origin_key: str
):
    """The cancel is written to a gateway that is stopped (SIGSTOP), then killed: neither it
    nor its ``cancelled`` answer survives. The resume on the other gateway must not reopen the
    cancelled context (its text would be spoken after the barge-in); it ends with
    ContextCancelled, no audio after the cancel, while the other context is reopened and
    finishes. Before, the SDK reopened both."""
    a, b = gateways
    fetch = token_fetcher(edge.ws, origin_key, origin=ORIGIN)
    async with asyncio.timeout(40):
        tts = await SynthesisSession.connect(
            [a.ws, b.ws], token_provider=fetch, origin=ORIGIN, lead_ms=300, options=OPTIONS
        )
        barged = await tts.open("barged", tts_config())
        await barged.append(TEXT)
        await barged.close()
        other = await tts.open("other", tts_config())
        await other.append("One more short sentence.")
        await other.close()
        before: list[ContextEvent] = []
        async for event in barged:
            before.append(event)
            if isinstance(event, SynthesizedAudio) and event.sequence_number == 4:
                break
        a.signal(signal.SIGSTOP)
        await barged.cancel()  # into the stopped gateway's socket buffer
        a.signal(signal.SIGKILL)
        after = [event async for event in barged]
        others = [event async for event in other]
        await tts.close()
    # What the gateway had sent before it stopped still arrives (the session's lead runs
    # ahead of playback: 300 ms), then the end; before, the rest of the text, about 8 s.
    assert isinstance(after[-1], synthesis_pb2.ContextCancelled), after[-1]
    chunks = [e for e in before + after if isinstance(e, SynthesizedAudio)]
    assert [c.sequence_number for c in chunks] == list(range(1, len(chunks) + 1))
    late_ms = sum(e.duration_ms for e in after if isinstance(e, SynthesizedAudio))
    assert late_ms <= 600, f"{late_ms} ms of audio after the cancel"
    assert after[-1].last_sequence_number == chunks[-1].sequence_number
    assert isinstance(others[-1], synthesis_pb2.ContextDone)
    words = [w.word for w in spoken_words(others)]
    assert words == ["One", "more", "short", "sentence"]


SSML = (
    "<speak>Hello from the voxwire gateway. This is a second sentence to speak. "
    '<break time="300ms"/>And here is a third one, somewhat longer than the others.</speak>'
)


async def _speak_ssml(
    urls: list[str], provider: object, kill: GatewayProcess | None
) -> tuple[list[ContextEvent], Resumed | None]:
    events: list[ContextEvent] = []
    async with asyncio.timeout(40):
        tts = await SynthesisSession.connect(
            urls,
            token_provider=provider,  # type: ignore[arg-type]
            origin=ORIGIN,
            lead_ms=300,
            options=OPTIONS,
        )
        session_events = asyncio.create_task(anext(aiter(tts.events())))
        config = tts_config()
        config.text_format = synthesis_pb2.TEXT_FORMAT_SSML
        ctx = await tts.open("c1", config)
        await ctx.append(SSML)
        await ctx.close()
        loop = asyncio.get_running_loop()
        arrivals: list[float] = []
        async for event in ctx:
            events.append(event)
            if isinstance(event, SynthesizedAudio):
                arrivals.append(loop.time())
            if kill and isinstance(event, SynthesizedAudio) and event.sequence_number == 8:
                kill.signal(signal.SIGKILL)
        await tts.close()
        resumed = await session_events if kill else None
        if not kill:
            session_events.cancel()
    assert resumed is None or isinstance(resumed, Resumed)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    print(f"SSML {'kill' if kill else 'no fault'}: longest wait between chunks {max(gaps):.3f} s")
    return events, resumed


async def test_an_ssml_context_resumes_from_its_document_without_repeating_audio(
    edge: Edge, gateways: tuple[GatewayProcess, GatewayProcess], origin_key: str
):
    """An SSML document cannot be cut after a word: the SDK reopens it whole and drops the
    audio of it it has already. Before, it sent the text after the last word heard, no
    document at all, and the context ended with SSML_INVALID."""
    a, b = gateways
    fetch = token_fetcher(edge.ws, origin_key, origin=ORIGIN)
    reference, _ = await _speak_ssml([b.ws], fetch, None)
    events, resumed = await _speak_ssml([a.ws, b.ws], fetch, a)
    assert resumed is not None and resumed.url.startswith(b.ws)
    assert isinstance(events[-1], synthesis_pb2.ContextDone), events[-1]
    chunks = [e for e in events if isinstance(e, SynthesizedAudio)]
    assert [c.sequence_number for c in chunks] == list(range(1, len(chunks) + 1))
    position = 0
    for chunk in chunks:  # the timeline continues across the resume, no sample twice
        assert abs(chunk.start_ms - position) <= 1, (chunk.start_ms, position)
        assert abs(len(chunk.audio) / 2 - chunk.duration_ms * RATE / 1000) <= RATE / 1000
        position = chunk.start_ms + chunk.duration_ms
    # eSpeak gives about the same length in another process (docs/contract.md, "Failover").
    faultless = sum(c.duration_ms for c in reference if isinstance(c, SynthesizedAudio))
    assert abs(position - faultless) <= 40, (position, faultless)
    words = [w.word for w in spoken_words(events)]
    assert words == [w.word for w in spoken_words(reference)]
    assert words[0] == "Hello" and words[-1] == "others", words
    print(f"TTS SSML SIGKILL: resumed in {resumed.downtime_s * 1000:.0f} ms, {position} ms")


async def test_long_text_going_in_pieces_resumes_with_every_word_once(
    edge: Edge, gateways: tuple[GatewayProcess, GatewayProcess]
):
    # Text over the 16 KiB a context holds goes in pieces as it is spoken (voxwire.text_pieces);
    # a gateway killed between pieces: the pieces sent are replayed from the last word heard,
    # their flushes with them, and the rest follows on the other gateway.
    a, b = gateways
    text = long_text(24)
    events: list[ContextEvent] = []
    async with asyncio.timeout(60):
        tts = await SynthesisSession.connect(
            [a.ws, b.ws], api_key=edge.key, lead_ms=0, options=OPTIONS
        )
        ctx = await tts.open("long", tts_config("bench_tts"))
        await ctx.append(text)
        await ctx.close()
        async for event in ctx:
            events.append(event)
            if isinstance(event, SynthesizedAudio) and event.sequence_number == 120:
                assert ctx.feeding  # killed with pieces still to go
                a.signal(signal.SIGKILL)
        await tts.close()
    assert isinstance(events[-1], synthesis_pb2.ContextDone)
    chunks = [e for e in events if isinstance(e, SynthesizedAudio)]
    assert [c.sequence_number for c in chunks] == list(range(1, len(chunks) + 1))
    words = spoken_words(events)
    spoken = [text[w.text_offset : w.text_offset + w.text_length].rstrip(".") for w in words]
    assert spoken == [part.rstrip(".") for part in text.split()]
    assert not [e for e in events if isinstance(e, synthesis_pb2.FlushAck)]


async def test_a_truncate_after_a_resume_hears_the_words_from_before_it(
    edge: Edge, gateways: tuple[GatewayProcess, GatewayProcess], origin_key: str
):
    # Truncated.heard came from the gateway the context was reopened on, which knows only the
    # words it spoke itself: a listener stopped after the resume got heard=[] (a review:
    # 8 words heard, none reported), the record of what the user heard lost.
    a, b = gateways
    fetch = token_fetcher(edge.ws, origin_key, origin=ORIGIN)
    events: list[ContextEvent] = []
    async with asyncio.timeout(40):
        tts = await SynthesisSession.connect(
            [a.ws, b.ws], token_provider=fetch, origin=ORIGIN, lead_ms=300, options=OPTIONS
        )
        ctx = await tts.open("c1", tts_config())
        await ctx.append(TEXT)
        await ctx.close()
        killed_at = truncated_at = 0
        async for event in ctx:
            events.append(event)
            if not isinstance(event, SynthesizedAudio):
                continue
            if not killed_at and event.sequence_number == 8:
                a.signal(signal.SIGKILL)
                killed_at = event.start_ms + event.duration_ms
            elif killed_at and not truncated_at and event.sequence_number == 12:
                truncated_at = event.start_ms + event.duration_ms
                await ctx.truncate(truncated_at)
        await tts.close()
    end = events[-1]
    assert isinstance(end, tts_pb2.Truncated), end
    words = spoken_words(events)
    expected = [w.word for w in words if w.end_ms <= end.played_ms]
    assert expected and [w.word for w in end.heard] == expected
    assert any(w.end_ms <= killed_at for w in end.heard)  # words from before the resume too
    for word in end.heard:  # whole-context offsets, as the words were passed on
        assert TEXT[word.text_offset : word.text_offset + word.text_length] == word.word
