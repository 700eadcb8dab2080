"""StreamingSynthesize through the adapter, against the real Triton and eSpeak NG."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from localstack.client import StreamOutcome, collect, write_all
from tests.helpers.raw_calls import read_rest
from tests.helpers.status import from_trailers
from voxwire.audio.codecs import Encoding, PcmFormat, decode
from voxwire.timings import parse_server_timing
from voxwire.v1 import audio_pb2, errors_pb2, stream_pb2, synthesis_pb2, synthesis_pb2_grpc

Req = synthesis_pb2.StreamingSynthesizeRequest
MODEL = "tts_espeak"
NATIVE = 22050
LONG_TEXT = (
    "This is a fairly long sentence that keeps eSpeak busy for a while, so that the first "
    "chunk of audio can leave long before the last one has been synthesized, and then some "
    "more words follow to make quite sure of it"
)


def out_format(encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, rate=24000) -> audio_pb2.AudioFormat:
    return audio_pb2.AudioFormat(encoding=encoding, sample_rate_hz=rate)


def open_(cid: str, **kw) -> Req:
    kw.setdefault("model", MODEL)
    kw.setdefault("output_format", out_format())
    kw.setdefault("word_timestamps", True)
    return Req(context_id=cid, open=synthesis_pb2.SynthesisContextConfig(**kw))


def append(cid: str, text: str) -> Req:
    return Req(context_id=cid, append=synthesis_pb2.AppendText(text=text))


def flush(cid: str, fid: str) -> Req:
    return Req(context_id=cid, flush=synthesis_pb2.Flush(flush_id=fid))


def close(cid: str) -> Req:
    return Req(context_id=cid, close=synthesis_pb2.CloseContext())


def cancel(cid: str) -> Req:
    return Req(context_id=cid, cancel=synthesis_pb2.Cancel())


async def run(channel, messages, *, pace_s: float = 0.0) -> StreamOutcome:
    stub = synthesis_pb2_grpc.SynthesisStub(channel)
    call = stub.StreamingSynthesize(timeout=60)
    writer = asyncio.create_task(write_all(call, messages, pace_s=pace_s))
    out = await collect(call)
    await writer
    return out


def for_context(out: StreamOutcome, cid: str) -> list:
    return [r for r in out.responses if r.context_id == cid]


def kinds(responses) -> list[str]:
    return [r.WhichOneof("response") for r in responses]


def reason(resp) -> str:
    return errors_pb2.ErrorReason.Name(resp.error.error.reason).removeprefix("ERROR_REASON_")


def audio_of(responses) -> bytes:
    return b"".join(r.audio.audio for r in responses if r.HasField("audio"))


def check_chunks(responses) -> None:
    chunks = [r.audio for r in responses if r.HasField("audio")]
    assert [c.sequence_number for c in chunks] == list(range(1, len(chunks) + 1))
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.start_ms == a.start_ms + a.duration_ms  # chunks tile exactly


# -- contexts -------------------------------------------------------------------------------


async def test_interleaved_contexts_each_complete_in_order(channel):
    messages = [
        open_("a"),
        open_("b", voice="en-gb-x-rp"),
        append("a", "Good morning. "),
        append("b", "Your order has shipped. "),
        append("a", "How can I help you today?"),
        append("b", "It arrives on Tuesday."),
        close("b"),
        close("a"),
    ]
    out = await run(channel, messages)
    assert out.code == grpc.StatusCode.OK, out.details
    for cid in ("a", "b"):
        mine = for_context(out, cid)
        assert kinds(mine)[0] == "opened" and kinds(mine)[-1] == "done"
        check_chunks(mine)
        done = mine[-1].done
        assert done.last_sequence_number == len([r for r in mine if r.HasField("audio")])
        assert done.audio_ms == len(audio_of(mine)) // 48  # 24 kHz PCM16
        assert done.timings.compute_us > 0 and done.timings.model_requests == 2
    assert out.responses[-1].HasField("summary")
    assert out.responses[-1].summary.contexts == 2


async def test_flush_is_acknowledged_after_its_audio(channel):
    out = await run(
        channel,
        [
            open_("a"),
            append("a", "no full stop here"),
            flush("a", "f-1"),
            append("a", "more"),
            close("a"),
        ],
    )
    mine = for_context(out, "a")
    at = kinds(mine).index("flush_ack")
    ack = mine[at].flush_ack
    before = [r.audio for r in mine[:at] if r.HasField("audio")]
    assert (
        ack.flush_id == "f-1" and before and ack.last_sequence_number == before[-1].sequence_number
    )
    assert (
        kinds(mine)[-1] == "done" and mine[-1].done.last_sequence_number > ack.last_sequence_number
    )


async def test_cancel_ack_guarantees_no_frame_after_it(channel):
    stub = synthesis_pb2_grpc.SynthesisStub(channel)
    call = stub.StreamingSynthesize(timeout=60)
    await call.write(open_("long"))
    await call.write(open_("other"))
    await call.write(append("long", " ".join(["Sentence number one goes on and on."] * 30)))
    responses = []
    async for r in call:  # wait for the first audio of "long", then cancel it
        responses.append(r)
        if r.context_id == "long" and r.HasField("audio"):
            break
    await call.write(cancel("long"))
    await call.write(append("other", "Still here. "))
    await call.write(close("other"))
    await call.done_writing()
    async for r in call:
        responses.append(r)
    assert await call.code() == grpc.StatusCode.OK
    mine = [r for r in responses if r.context_id == "long"]
    at = kinds(mine).index("cancelled")
    assert at == len(mine) - 1  # nothing for the context after the ack
    sent = [r.audio.sequence_number for r in mine if r.HasField("audio")]
    assert mine[at].cancelled.last_sequence_number == sent[-1]
    other = [r for r in responses if r.context_id == "other"]
    assert kinds(other)[-1] == "done" and audio_of(other)


@pytest.mark.parametrize("skip_ms", [450, 1500])
async def test_skip_audio_ms_sends_exactly_the_audio_after_it(channel, skip_ms):
    """A context reopened from the start of text partly spoken (an SSML document resumes
    whole) with the audio the client has: the rest of the same audio, no sample twice, the
    timeline and numbering going on; 1,500 ms reaches past the first unit (sentence)."""
    fmt = out_format(rate=24000)  # bench_tts's own rate, and the model is deterministic

    def messages(**config: int) -> list[Req]:
        return [
            open_("c", model="bench_tts", output_format=fmt, **config),
            append("c", "One two three four. Five six seven."),
            flush("c", "f1"),
            append("c", "Eight nine ten."),
            close("c"),
        ]

    whole = for_context(await run(channel, messages()), "c")
    rest = for_context(
        await run(
            channel,
            messages(timeline_offset_ms=1000, skip_audio_ms=skip_ms, first_sequence_number=7),
        ),
        "c",
    )
    assert kinds(rest)[-1] == "done" and "flush_ack" in kinds(rest), kinds(rest)
    assert audio_of(rest) == audio_of(whole)[skip_ms * 48 :]  # 24 kHz PCM16: 48 bytes a ms
    chunks = [r.audio for r in rest if r.HasField("audio")]
    assert (chunks[0].sequence_number, chunks[0].start_ms) == (7, 1000 + skip_ms)
    assert [c.sequence_number for c in chunks] == list(range(7, 7 + len(chunks)))
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.start_ms == a.start_ms + a.duration_ms
    assert rest[-1].done.audio_ms == 1000 + whole[-1].done.audio_ms
    # The word timestamps the client has not got: those ending after the skip, on its timeline.
    words = [w for r in whole if r.HasField("words") for w in r.words.words]
    expected = [(w.word, w.end_ms + 1000) for w in words if w.end_ms > skip_ms]
    got = [(w.word, w.end_ms) for r in rest if r.HasField("words") for w in r.words.words]
    assert got == expected and 0 < len(got) < len(words), (got, words)


async def test_pronunciation_entries_change_the_audio(channel):
    text = "Say tomato."
    plain = await run(channel, [open_("a"), append("a", text), close("a")])
    entry = synthesis_pb2.PronunciationEntry(
        grapheme="tomato", phonemes="t@m'A:toU", alphabet=synthesis_pb2.PHONEME_ALPHABET_ESPEAK
    )
    custom = await run(channel, [open_("a", pronunciations=[entry]), append("a", text), close("a")])
    assert plain.code == custom.code == grpc.StatusCode.OK
    a, b = audio_of(plain.responses), audio_of(custom.responses)
    assert a and b and a != b
    words = [w.word for r in custom.of("words") for w in r.words]
    assert "tomato" in [w.lower().strip(".") for w in words]  # timestamps keep the written word


async def test_word_timestamps_are_monotonic_and_inside_the_audio(channel):
    out = await run(channel, [open_("a"), append("a", "One two three. Four five six."), close("a")])
    words = [w for r in out.of("words") for w in r.words]
    assert [w.word.strip(".").lower() for w in words] == [
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
    ]
    audio_ms = out.of("done")[0].audio_ms
    previous = 0
    for w in words:
        assert previous <= w.start_ms <= w.end_ms <= audio_ms
        previous = w.end_ms


async def test_first_audio_leaves_before_synthesis_is_done(channel):
    out = await run(channel, [open_("a"), append("a", LONG_TEXT), close("a")])
    timings = out.of("done")[0].timings
    # Time from the text to the first chunk sent is shorter than the model's compute for
    # the text: the first chunk left while eSpeak was still synthesizing.
    assert timings.model_requests == 1
    assert timings.first_response_us < timings.compute_us, timings


# -- SSML -------------------------------------------------------------------------------------


async def test_valid_ssml_is_spoken(channel):
    doc = '<speak>Hello <break time="200ms"/> <emphasis>world</emphasis>.</speak>'
    out = await run(
        channel,
        [open_("a", text_format=synthesis_pb2.TEXT_FORMAT_SSML), append("a", doc), close("a")],
    )
    assert kinds(out.responses)[-2] == "done" and audio_of(out.responses)


async def test_an_ssml_document_declared_plain_gets_a_notice_before_its_audio(channel):
    # Spoken as plain text, "<speak>Hello ..." reads its markup out as words ("speak", "break",
    # "time", "=" ...) with nothing to say why (docs/contract.md, "Input that does not match
    # its declared format"). The context goes on as declared.
    doc = '  <speak>Hello <break time="200ms"/> there.</speak>'
    out = await run(channel, [open_("a"), append("a", doc), close("a")])
    kinds_seen = kinds(out.responses)
    notices = [r for r in out.responses if r.WhichOneof("response") == "notice"]
    assert len(notices) == 1 and notices[0].context_id == "a"
    assert notices[0].notice.kind == stream_pb2.StreamNotice.KIND_FORMAT_SUSPECT
    assert "text_format SSML" in notices[0].notice.message
    assert kinds_seen.index("notice") < kinds_seen.index("audio")
    assert kinds_seen[-2] == "done"
    said = [
        w.word for r in out.responses if r.WhichOneof("response") == "words" for w in r.words.words
    ]
    assert "break" in said  # spoken as declared: plain


async def test_plain_text_and_declared_ssml_get_no_notice(channel):
    ssml = '<speak>Hello <break time="200ms"/> there.</speak>'
    out = await run(
        channel,
        [
            open_("a", text_format=synthesis_pb2.TEXT_FORMAT_SSML),
            append("a", ssml),
            close("a"),
            open_("b"),
            append("b", "  "),
            append("b", "Two is less than <three>, and that is all."),
            append("b", "<speak> later in the text is just text."),
            close("b"),
        ],
    )
    assert "notice" not in kinds(out.responses)


@pytest.mark.parametrize(
    "doc",
    [
        "<speak>unclosed <emphasis>tag</speak>",
        "<speak><audio src='x.wav'/>hi</speak>",
        '<speak><break time="forever"/></speak>',
        "plain text, no markup",
        '<!DOCTYPE x [<!ENTITY a "b">]><speak>&a;</speak>',
    ],
)
async def test_invalid_ssml_fails_the_context_and_speaks_nothing(channel, doc):
    out = await run(
        channel,
        [
            open_("bad", text_format=synthesis_pb2.TEXT_FORMAT_SSML),
            open_("good"),
            append("bad", doc),
            flush("bad", "f"),
            append("good", "Fine."),
            close("good"),
        ],
    )
    bad = for_context(out, "bad")
    assert kinds(bad) == ["opened", "error"] and reason(bad[-1]) == "SSML_INVALID"
    assert bad[-1].error.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert kinds(for_context(out, "good"))[-1] == "done"
    assert out.code == grpc.StatusCode.OK


# -- formats ----------------------------------------------------------------------------------
# eSpeak's output varies by a few samples from one synthesis to the next (it keeps state), so
# the signal checks use bench_tts: a 440 Hz tone at 24 kHz, 0.3 of full scale, 300 ms per word,
# phase-continuous within a request. Every output format must be that tone, sample for sample.

ENCODINGS = {
    audio_pb2.AUDIO_ENCODING_PCM_S16LE: Encoding.PCM_S16LE,
    audio_pb2.AUDIO_ENCODING_PCM_F32LE: Encoding.PCM_F32LE,
    audio_pb2.AUDIO_ENCODING_MULAW: Encoding.MULAW,
    audio_pb2.AUDIO_ENCODING_ALAW: Encoding.ALAW,
}
TONE_WORDS = "one two three four five"  # 5 words: 1.5 s of tone
G711 = (audio_pb2.AUDIO_ENCODING_MULAW, audio_pb2.AUDIO_ENCODING_ALAW)


@pytest.mark.parametrize(
    ("encoding", "rate"),
    [
        (audio_pb2.AUDIO_ENCODING_PCM_S16LE, r)
        for r in (8000, 11025, 16000, 22050, 24000, 44100, 48000)
    ]
    + [(audio_pb2.AUDIO_ENCODING_PCM_F32LE, r) for r in (12000, 32000, 48000)]
    + [(e, 8000) for e in G711],
)
async def test_every_output_format_carries_the_exact_signal(channel, encoding, rate):
    out = await run(
        channel,
        [
            open_("t", model="bench_tts", output_format=out_format(encoding, rate)),
            append("t", TONE_WORDS),
            close("t"),
        ],
    )
    assert out.code == grpc.StatusCode.OK, out.details
    mine = for_context(out, "t")
    check_chunks(mine)
    assert len([r for r in mine if r.HasField("audio")]) > 5  # many chunk boundaries to cross
    x = decode(audio_of(mine), PcmFormat(ENCODINGS[encoding], rate))
    assert abs(len(x) - 1.5 * rate) <= 1  # resampled length = n x out / in
    assert mine[-1].done.audio_ms == 1500
    t = np.arange(len(x)) / rate
    ideal = 0.3 * np.sin(2 * np.pi * 440 * t)
    core = slice(int(0.02 * rate), len(x) - int(0.02 * rate))  # skip the tone's hard edges
    err = np.abs(x[core] - ideal[core])
    if encoding in G711:
        # G.711 quantizes logarithmically: error within about 1/32 of the sample, plus a floor.
        assert np.all(err <= np.abs(ideal[core]) / 32 + 4e-3), float(err.max())
    else:
        # A click at any chunk boundary would be far above this.
        assert err.max() < 2e-3, float(err.max())


# -- errors -----------------------------------------------------------------------------------


async def test_context_errors_have_reasons_and_the_stream_goes_on(channel):
    bad_alphabet = synthesis_pb2.PronunciationEntry(
        grapheme="x", phonemes="eks", alphabet=synthesis_pb2.PHONEME_ALPHABET_IPA
    )
    messages = [
        append("early", "text before open"),
        flush("ghost", "f"),
        open_("a"),
        open_("a"),  # a duplicate open fails context "a": the client lost track of it
        append("a", "so this is text for a context that is not open"),
        open_("v", voice="klingon"),
        open_("p", pronunciations=[bad_alphabet]),
        open_("m", model="nope"),
        open_("r", output_format=out_format(audio_pb2.AUDIO_ENCODING_MULAW, 16000)),
        open_("b"),
        open_("c"),
        open_("d"),
        open_("e"),
        open_("f"),  # b, c, d, e are open: a fifth is one too many (limit 4 in the tests)
        append("b", "x" * 32_001),
        open_("z"),
        append("z", "Still working."),
        close("z"),
    ]
    out = await run(channel, messages)
    assert out.code == grpc.StatusCode.OK, out.details
    errors: dict[str, list[str]] = {}
    for r in out.responses:
        if r.HasField("error"):
            errors.setdefault(r.context_id, []).append(reason(r))
    assert errors == {
        "early": ["CONTEXT_NOT_OPEN"],
        "ghost": ["UNKNOWN_CONTEXT"],
        "a": ["CONTEXT_ALREADY_OPEN", "CONTEXT_NOT_OPEN"],
        "v": ["INVALID_CONFIG"],
        "p": ["INVALID_PRONUNCIATION"],
        "m": ["UNKNOWN_MODEL"],
        "r": ["UNSUPPORTED_SAMPLE_RATE"],
        "f": ["TOO_MANY_CONTEXTS"],
        "b": ["CHUNK_TOO_LARGE"],
    }
    assert kinds(for_context(out, "z"))[-1] == "done"


async def test_contexts_are_admitted_by_the_models_capacity(channel, adapter):
    # tts_espeak runs 2 instances of 1 synthesis each: 2 x 1 x tts_oversubscription 4 = 8
    # contexts per replica (published in Capabilities), not the replica-wide 256 of before.
    per_replica = 2 * 1 * adapter.config.tts_oversubscription
    stub = synthesis_pb2_grpc.SynthesisStub(channel)
    calls = [stub.StreamingSynthesize(timeout=30) for _ in range(3)]
    opened, refused = 0, []
    for i in range(per_replica + 1):
        call = calls[i // 4]  # 4 contexts per stream at most (TEST_LIMITS)
        await call.write(open_(f"c{i}"))
        response = await call.read()
        if response.HasField("opened"):
            opened += 1
        else:
            refused.append(response)
    for call in calls:
        await call.done_writing()
        await read_rest(call)
    assert opened == per_replica
    (overloaded,) = refused
    assert reason(overloaded) == "OVERLOADED" and overloaded.error.error.retryable
    assert overloaded.error.error.HasField("retry_delay")


async def test_stage_timings_never_add_up_to_more_than_the_wall_time(channel):
    # bench_tts answers a unit with many responses, each reporting its compute; before, the
    # triton stage subtracted only the last one's, so compute was counted twice.
    out = await run(
        channel,
        [
            open_("t", model="bench_tts", word_timestamps=False),
            append("t", "one two three four five six seven eight nine ten."),
            close("t"),
        ],
    )
    (done,) = out.of("done")
    t = done.timings
    assert t.model_responses > 10
    assert t.triton_us + t.compute_us + t.encode_us <= t.total_us, t


async def test_stream_level_error_has_status_reason_and_trailers(channel):
    out = await run(channel, [Req(append=synthesis_pb2.AppendText(text="no context id"))])
    err = from_trailers(out.trailers)
    assert (out.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_MESSAGE")
    assert "total" in parse_server_timing(out.server_timing)
    ok = await run(channel, [open_("a"), append("a", "Hi."), close("a")])
    assert ok.timings.model_requests == 1 and ok.timings.compute_us > 0
