"""tts_espeak through a real Triton: streaming audio, word timings, pronunciations, SSML."""

from __future__ import annotations

import time
from typing import Any

import grpc
import numpy as np
import pytest

from tests.models.triton_io import (
    Event,
    ModelResponse,
    ModelStream,
    audio_of,
    events_of,
    tts_request,
)

MODEL = "tts_espeak"
RATE_HZ = 22050


async def synthesize(
    channel: grpc.aio.Channel, text: str, config: dict[str, Any] | None = None
) -> tuple[list[ModelResponse], float]:
    """All responses of one request, and the monotonic time the request was sent."""
    stream = ModelStream(channel)
    try:
        sent_at = time.monotonic()
        responses = await stream.request(
            tts_request(MODEL, text, {"voice": "en-us", **(config or {})})
        )
    finally:
        await stream.close()
    return responses, sent_at


def words_of(responses: list[ModelResponse]) -> list[Event]:
    return [w for e in events_of(responses, "words") for w in e["words"]]


def single_error(responses: list[ModelResponse]) -> Event:
    """The request failed cleanly: one final response, one error event, no audio at all."""
    assert len(responses) == 1 and responses[0].final, responses
    assert audio_of(responses).size == 0
    (error,) = responses[0].events
    assert error["type"] == "error", error
    return error


def assert_words_match(text: str, words: list[Event], audio_ms: int) -> None:
    assert words
    previous = None
    for word in words:
        assert text[word["text_offset"] : word["text_offset"] + word["text_length"]] == word["word"]
        assert 0 <= word["start_ms"] <= word["end_ms"] <= audio_ms, word
        if previous is not None:
            assert word["start_ms"] >= previous["start_ms"]
            assert word["text_offset"] >= previous["text_offset"] + previous["text_length"]
        previous = word


async def test_the_same_request_gives_the_same_words_and_length(channel: grpc.aio.Channel) -> None:
    # The adapter's TTS failover resubmits a unit to another replica and drops the samples and
    # the words the client already has, by count (docs/contract.md, "Failover"): that needs the
    # same words in the same order and about the same length, on any instance, whatever was
    # synthesized before. eSpeak NG is not bit-exact across syntheses in one process (state it
    # keeps between them shifts the glottal phase and some durations by a few ms), so the join
    # may show a small seam; what it needs holds within 20 ms.
    text = "Hello there, this is voxwire speaking. The second sentence follows."
    tolerance_ms = 20
    first, _ = await synthesize(channel, text)
    await synthesize(channel, "Something else in between, with other words.")
    second, _ = await synthesize(channel, text)
    size_a, size_b = audio_of(first).size, audio_of(second).size
    assert abs(size_a - size_b) <= RATE_HZ * tolerance_ms // 1000, (size_a, size_b)
    words_a, words_b = words_of(first), words_of(second)
    spans = [
        [(w["word"], w["text_offset"], w["text_length"]) for w in ws] for ws in (words_a, words_b)
    ]
    assert spans[0] == spans[1] and len(spans[0]) == 10
    for a, b in zip(words_a, words_b, strict=True):
        assert abs(a["start_ms"] - b["start_ms"]) <= tolerance_ms, (a, b)
        assert abs(a["end_ms"] - b["end_ms"]) <= tolerance_ms, (a, b)


async def test_streams_audio_words_and_done(channel: grpc.aio.Channel) -> None:
    text = "Hello there, this is voxwire speaking. The second sentence follows."
    responses, _ = await synthesize(channel, text)
    assert [r.final for r in responses] == [False] * (len(responses) - 1) + [True]
    audio = audio_of(responses)
    assert sum(r.audio.size > 0 for r in responses) >= 5  # ~100 ms per response, not one blob
    assert all(r.compute_us is not None for r in responses)
    (done,) = events_of(responses, "done")
    assert responses[-1].events[-1] == done and done["samples"] == audio.size
    assert 2.0 < audio.size / RATE_HZ < 8.0 and np.abs(audio).max() > 1000
    words = words_of(responses)
    assert_words_match(text, words, audio.size * 1000 // RATE_HZ)
    expected = "Hello there this is voxwire speaking The second sentence follows".split()
    assert [w["word"] for w in words] == expected


async def test_a_word_espeak_speaks_joined_to_the_one_before_still_gets_its_timestamp(
    channel: grpc.aio.Channel,
) -> None:
    # eSpeak NG marks "from the" as one word (on "from"): "the" shares its time, by length.
    text = "Hello from the voxwire gateway. Put it on the table, then go."
    responses, _ = await synthesize(channel, text)
    words = words_of(responses)
    assert_words_match(text, words, audio_of(responses).size * 1000 // RATE_HZ)
    assert [w["word"] for w in words] == text.replace(",", "").replace(".", "").split()
    joined = next(i for i, w in enumerate(words) if w["word"] == "the")
    assert words[joined]["start_ms"] == words[joined - 1]["end_ms"]  # contiguous, not stacked
    assert words[joined]["end_ms"] <= words[joined + 1]["start_ms"]


async def test_in_ssml_a_word_espeak_speaks_joined_to_the_one_before_gets_its_timestamp(
    channel: grpc.aio.Channel,
) -> None:
    # As in plain text, from the document's text between the marks, never its markup: "the"
    # after a <break/>, and none from the tags or their attributes ("&amp;" is spoken, "and",
    # and marked: its word is the "&" it stands for, never "amp").
    doc = (
        '<speak>Hello from the <emphasis level="strong">voxwire</emphasis> gateway. Put it on '
        '<break time="100ms"/> the table &amp; then <prosody rate="90%">go</prosody>.</speak>'
    )
    responses, _ = await synthesize(channel, doc, {"text_format": "ssml"})
    words = words_of(responses)
    assert_words_match(doc, words, audio_of(responses).size * 1000 // RATE_HZ)
    expected = "Hello from the voxwire gateway Put it on the table & then go".split()
    assert [w["word"] for w in words] == expected, words
    for a, b in zip(words, words[1:], strict=False):
        assert a["end_ms"] <= b["start_ms"], (a, b)  # in order, not stacked


async def test_a_document_comes_out_the_same_whatever_the_instance_spoke_before(
    channel: grpc.aio.Channel,
) -> None:
    # eSpeak NG keeps how its last text ended: a document that opens a paragraph began with a
    # paragraph's pause after plain text and not after another paragraph (226 ms apart), and a
    # failover or resume that speaks it again and skips by time joined in the wrong place.
    # Each of the model's two instances speaks plain text, then the document twice.
    doc = "<speak><p><s>Hello there.</s><s>Fast words now.</s></p></speak>"
    lengths = []
    for text, fmt in [("Hello there.", "plain")] * 2 + [(doc, "ssml")] * 4:
        responses, _ = await synthesize(channel, text, {"text_format": fmt})
        lengths.append(audio_of(responses).size)
    after_plain, after_itself = lengths[2:4], lengths[4:6]
    tolerance = 20 * RATE_HZ // 1000  # what failover needs (test above)
    for a in after_plain:
        for b in after_itself:
            assert abs(a - b) <= tolerance, (after_plain, after_itself)


async def test_first_audio_leaves_long_before_synthesis_ends(channel: grpc.aio.Channel) -> None:
    sentence = "The quick brown fox jumps over the lazy dog while the band plays on. "
    text = sentence * 55  # ~3.8 kB, about four minutes of audio
    assert len(text.encode()) <= 4096
    responses, sent_at = await synthesize(channel, text)
    first_audio = next(r for r in responses if r.audio.size)
    (done,) = events_of(responses, "done")
    first_s = first_audio.received_at - sent_at
    total_s = responses[-1].received_at - sent_at
    print(
        f"first audio after {first_s * 1000:.1f} ms (model compute {first_audio.compute_us} us), "
        f"all {len(responses)} responses after {total_s * 1000:.1f} ms, "
        f"synth_us {done['synth_us']}, audio {done['samples'] / RATE_HZ:.1f} s"
    )
    assert first_audio.compute_us < done["synth_us"] / 20  # the model sent it early...
    assert first_s < total_s / 5  # ...and the client got it early
    assert done["samples"] / RATE_HZ > 120


async def test_pronunciation_entry_changes_the_audio(channel: grpc.aio.Channel) -> None:
    text = "I say Tomato, you say tomato."
    plain, _ = await synthesize(channel, text)
    entry = {"grapheme": "tomato", "phonemes": "t@m'A:toU", "alphabet": "espeak"}
    custom, _ = await synthesize(channel, text, {"pronunciations": [entry]})
    a, b = audio_of(plain), audio_of(custom)
    assert a.size != b.size or not np.array_equal(a, b)
    words = words_of(custom)
    assert_words_match(text, words, b.size * 1000 // RATE_HZ)
    # Offsets refer to the client's text, not to the rewritten [[phoneme]] text.
    assert [w["word"] for w in words if w["word"].lower() == "tomato"] == ["Tomato", "tomato"]


@pytest.mark.parametrize(
    "entry",
    [
        {"grapheme": "tomato", "phonemes": "t@m'A:toU", "alphabet": "ipa"},
        {"grapheme": "tomato", "phonemes": "t@]]m<x>", "alphabet": "espeak"},
        {"grapheme": "", "phonemes": "t@m'A:toU", "alphabet": "espeak"},
    ],
)
async def test_invalid_pronunciation_is_an_error(
    channel: grpc.aio.Channel, entry: dict[str, str]
) -> None:
    responses, _ = await synthesize(channel, "tomato", {"pronunciations": [entry]})
    assert single_error(responses)["reason"] == "INVALID_PRONUNCIATION"


SSML_VALID = (
    '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">'
    '<p><s>Call <say-as interpret-as="digits">123</say-as> now.</s>'
    '<s>Visit the <sub alias="World Wide Web">WWW</sub> &amp; relax.</s></p>'
    '<break time="{pause}"/>'
    '<prosody rate="150%" pitch="+10%" volume="-6dB">'
    'Fast <emphasis level="strong">words</emphasis>.</prosody>'
    '<phoneme alphabet="x-espeak" ph="h@l\'oU">hullo</phoneme>'
    "</speak>"
)


async def test_valid_ssml_is_spoken_with_offsets_into_the_document(
    channel: grpc.aio.Channel,
) -> None:
    short_doc = SSML_VALID.replace("{pause}", "10ms")
    long_doc = SSML_VALID.replace("{pause}", "1500ms")
    short, _ = await synthesize(channel, short_doc, {"text_format": "ssml"})
    paused, _ = await synthesize(channel, long_doc, {"text_format": "ssml"})
    assert not events_of(short, "error") and events_of(short, "done")
    pause_samples = audio_of(paused).size - audio_of(short).size
    # eSpeak merges the <break> with the paragraph pause it makes anyway: ~1 s more, not 1.5.
    assert 0.8 * RATE_HZ < pause_samples < 1.8 * RATE_HZ
    words = words_of(short)
    assert_words_match(short_doc, words, audio_of(short).size * 1000 // RATE_HZ)
    spoken = [w["word"] for w in words]
    assert {"Call", "123", "WWW", "relax", "Fast", "words", "hullo"} <= set(spoken), spoken
    assert spoken.count("WWW") == 1  # the alias's three words are one word of the document


async def test_breaks_that_touch_are_as_long_as_their_sum(channel: grpc.aio.Channel) -> None:
    # eSpeak kept only the longest of breaks with nothing between them: a client chaining
    # three 4 s breaks (one break holds at most 10 s) heard 4 s of silence, not 12.
    chained = '<speak>Wait <break time="4s"/><break time="4s"/> <break time="4s"/> now.</speak>'
    single = '<speak>Wait <break time="10s"/> now.</speak>'
    one, _ = await synthesize(channel, single, {"text_format": "ssml"})
    three, _ = await synthesize(channel, chained, {"text_format": "ssml"})
    assert events_of(three, "done") and not events_of(three, "error")
    extra = audio_of(three).size - audio_of(one).size  # 12 s of breaks against 10 s
    assert 1.9 * RATE_HZ <= extra <= 2.1 * RATE_HZ, extra / RATE_HZ
    assert [w["word"] for w in words_of(three)] == ["Wait", "now"]


SSML_INVALID = {
    "malformed": ("<speak>Hello <s>world</speak>", "malformed XML"),
    "unknown element": ('<speak>Hi <audio src="x.wav"/></speak>', "<audio>"),
    "unknown attribute": ('<speak><prosody speed="fast">Hi</prosody></speak>', "speed"),
    "bad value": ('<speak><prosody rate="warp9">Hi</prosody></speak>', "rate"),
    "break too long": ('<speak>Hi <break time="30s"/></speak>', "time"),
    "wrong root": ("<p>Hello</p>", "<speak>"),
    "doctype": ('<!DOCTYPE speak [<!ENTITY boom "x">]><speak>&boom;</speak>', "DTD"),
    "nested p": ("<speak><p><p>Hi</p></p></speak>", "<p>"),
    "missing alias": ("<speak><sub>WWW</sub></speak>", "alias"),
    "ipa phoneme": ('<speak><phoneme alphabet="ipa" ph="x">a</phoneme></speak>', "alphabet"),
    "markup in text-only": (
        '<speak><say-as interpret-as="digits"><s>1</s></say-as></speak>',
        "<s>",
    ),
    "instruction": ('<?xml-stylesheet href="a"?><speak>Hi</speak>', "processing instruction"),
}


@pytest.mark.parametrize("case", sorted(SSML_INVALID))
async def test_invalid_ssml_is_an_error_without_audio(channel: grpc.aio.Channel, case: str) -> None:
    document, needle = SSML_INVALID[case]
    responses, _ = await synthesize(channel, document, {"text_format": "ssml"})
    error = single_error(responses)
    assert error["reason"] == "SSML_INVALID"
    assert needle in error["message"], error["message"]
    if case not in ("doctype",):
        assert "line 1" in error["message"], error["message"]


async def test_empty_text_is_done_without_audio(channel: grpc.aio.Channel) -> None:
    responses, _ = await synthesize(channel, "  \n ")
    assert len(responses) == 1 and responses[0].final
    assert responses[0].events == [{"type": "done", "samples": 0, "synth_us": 0}]


@pytest.mark.parametrize(
    ("text", "config", "reason"),
    [
        ("word " * 1000, {}, "TEXT_TOO_LARGE"),
        ("hello", {"voice": "klingon"}, "INVALID_CONFIG"),
        ("hello", {"language": "fr-FR"}, "INVALID_CONFIG"),
        ("hello", {"text_format": "markdown"}, "INVALID_CONFIG"),
    ],
)
async def test_request_errors(
    channel: grpc.aio.Channel, text: str, config: dict[str, Any], reason: str
) -> None:
    responses, _ = await synthesize(channel, text, config)
    assert single_error(responses)["reason"] == reason


async def test_language_picks_a_voice(channel: grpc.aio.Channel) -> None:
    us, _ = await synthesize(channel, "Schedule a tomato.", {"voice": None, "language": "en-US"})
    gb, _ = await synthesize(channel, "Schedule a tomato.", {"voice": None, "language": "en-GB"})
    assert events_of(us, "done") and events_of(gb, "done")
    assert not np.array_equal(audio_of(us), audio_of(gb))


MAX_UNIT_AUDIO_MS = 300_000  # config.pbtxt's voxwire.max_unit_audio_ms


def _breaks(count: int) -> str:
    """An SSML document of ``count`` ten-second breaks between words (a word each, so that
    the words spoken before the limit can be counted): a few bytes of text, minutes of
    audio."""
    return "<speak>" + 'a<break time="10s"/>' * count + "end</speak>"


async def test_a_units_audio_stops_at_the_models_limit(channel: grpc.aio.Channel) -> None:
    # 35 breaks: 350 s of audio from 700 bytes. The model stops at its limit and says so after
    # the audio and words up to there (without it: all of it, made in a third of a second and
    # held by Triton until read).
    responses, _ = await synthesize(channel, _breaks(35), {"text_format": "ssml"})
    audio = audio_of(responses)
    assert 0.95 * MAX_UNIT_AUDIO_MS <= audio.size * 1000 // RATE_HZ <= MAX_UNIT_AUDIO_MS
    assert responses[-1].final and not events_of(responses, "done")
    (error,) = events_of(responses, "error")
    assert error["reason"] == "TEXT_TOO_LARGE", error
    assert "300000 ms" in error["message"] and "flush" in error["message"], error
    assert len(words_of(responses)) >= 28  # the words spoken before it


async def test_a_unit_under_the_audio_limit_is_spoken_whole(channel: grpc.aio.Channel) -> None:
    responses, _ = await synthesize(channel, _breaks(27), {"text_format": "ssml"})
    assert events_of(responses, "done") and not events_of(responses, "error")
    assert audio_of(responses).size * 1000 // RATE_HZ > 270_000
    assert [w["word"] for w in words_of(responses)] == ["a"] * 27 + ["end"]
