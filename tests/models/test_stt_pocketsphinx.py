"""stt_pocketsphinx through a real Triton: recognition, timings, endpointing, controls."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import grpc
import numpy as np

from tests.helpers.wer import word_error_rate
from tests.models.speech import RATE_HZ, chunks, silence, spoken
from tests.models.triton_io import Event, SttSequence

MODEL = "stt_pocketsphinx"
SENTENCES = (
    "please call me back tomorrow morning at nine",
    "can you tell me my account balance",
    "turn off the lights in the kitchen",
)
_sequence_ids = itertools.count(1_000_001)


def new_sequence(channel: grpc.aio.Channel) -> SttSequence:
    return SttSequence(channel, MODEL, next(_sequence_ids))


async def stream_audio(
    sequence: SttSequence, audio: np.ndarray, chunk_ms: int = 100
) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks(audio, chunk_ms):
        events += await sequence.send(audio=chunk)
    return events


def of_type(events: list[Event], *types: str) -> list[Event]:
    return [e for e in events if e["type"] in types]


def assert_words_well_formed(final: Event, audio_ms: int) -> None:
    words = final["words"]
    assert words, final
    assert final["text"] == " ".join(w["word"] for w in words)
    previous_end = 0
    for word in words:
        assert 0 <= word["start_ms"] < word["end_ms"] <= audio_ms, word
        assert word["start_ms"] >= previous_end, words  # monotonic, no overlap
        assert 0.0 <= word["confidence"] <= 1.0
        previous_end = word["end_ms"]
    assert final["start_ms"] <= words[0]["start_ms"] and words[-1]["end_ms"] <= final["end_ms"]


async def transcribe(channel: grpc.aio.Channel, text: str) -> tuple[list[Event], int]:
    audio = np.concatenate([silence(0.3), spoken(text), silence(0.8)])
    sequence = new_sequence(channel)
    try:
        events = await sequence.start({"language": "en-US", "interim_results": False})
        events += await stream_audio(sequence, audio)
        events += await sequence.send(end=True)
    finally:
        await sequence.close()
    return events, len(audio) * 1000 // RATE_HZ


async def test_transcribes_flite_speech_with_word_timings(channel: grpc.aio.Channel) -> None:
    # Concurrent sequences: they spread over both instances and share one gRPC channel.
    results = await asyncio.gather(*(transcribe(channel, text) for text in SENTENCES))
    errors = []
    for text, (events, audio_ms) in zip(SENTENCES, results, strict=True):
        assert events[0]["type"] == "ready" and not of_type(events, "error"), events
        finals = of_type(events, "final")
        assert len(finals) == 1, finals
        assert_words_well_formed(finals[0], audio_ms)
        hypothesis = finals[0]["text"]
        errors.append(word_error_rate(text, hypothesis))
        print(f"{text!r} -> {hypothesis!r} (WER {errors[-1]:.2f})")
    assert sum(errors) / len(errors) <= 0.15, errors


async def test_interim_results_come_before_the_final(channel: grpc.aio.Channel) -> None:
    text = SENTENCES[0]
    sequence = new_sequence(channel)
    try:
        await sequence.start({"interim_results": True, "endpointing": {"enabled": False}})
        events = await stream_audio(sequence, spoken(text))
        assert not of_type(events, "final")  # endpointing off: nothing final before END
        events += await sequence.send(end=True)
    finally:
        await sequence.close()
    interims = of_type(events, "interim")
    assert len(interims) >= 3, events
    assert events.index(interims[-1]) < events.index(of_type(events, "final")[0])
    assert all(i["utterance"] == 0 and i["text"] for i in interims)
    texts = [i["text"] for i in interims]
    assert all(a != b for a, b in itertools.pairwise(texts)), texts  # only sent when changed
    assert interims[-1]["end_ms"] > interims[0]["end_ms"]


async def test_finalize_flushes_pending_audio_then_acks(channel: grpc.aio.Channel) -> None:
    speech = spoken(SENTENCES[1])
    sequence = new_sequence(channel)
    try:
        await sequence.start({"endpointing": {"enabled": False}})
        await stream_audio(sequence, speech)
        events = await sequence.send(control={"finalize": "f-1"})
        # After a finalize, the sequence goes on: a second utterance, flushed by END.
        more = await stream_audio(sequence, spoken(SENTENCES[2]))
        last = await sequence.send(end=True)
    finally:
        await sequence.close()
    assert [e["type"] for e in events] == ["final", "finalize_ack"], events
    final, ack = events
    assert final["from_finalize"] is True and final["utterance"] == 0
    assert word_error_rate(SENTENCES[1], final["text"]) <= 0.3, final["text"]
    assert ack == {"type": "finalize_ack", "id": "f-1", "audio_ms": len(speech) * 1000 // RATE_HZ}
    assert not of_type(more, "final")
    (second,) = of_type(last, "final")
    assert second["utterance"] == 1 and second["from_finalize"] is False
    assert second["start_ms"] >= ack["audio_ms"]  # times keep counting from the sequence start


async def test_finalize_without_speech_only_acks(channel: grpc.aio.Channel) -> None:
    sequence = new_sequence(channel)
    try:
        await sequence.start({})
        await stream_audio(sequence, silence(0.5))
        events = await sequence.send(control={"finalize": "empty"})
        await sequence.send(end=True)
    finally:
        await sequence.close()
    assert events == [{"type": "finalize_ack", "id": "empty", "audio_ms": 500}]


async def test_endpointing_splits_utterances_on_silence(channel: grpc.aio.Channel) -> None:
    first, second = spoken(SENTENCES[0]), spoken(SENTENCES[2])
    audio = np.concatenate([silence(0.3), first, silence(1.0), second, silence(1.0)])
    sequence = new_sequence(channel)
    try:
        await sequence.start({"endpointing": {"enabled": True, "silence_ms": 500}})
        events = await stream_audio(sequence, audio)
        at_end = await sequence.send(end=True)
    finally:
        await sequence.close()
    assert not of_type(at_end, "final")  # both utterances ended on silence, before END
    flow = of_type(events, "speech_started", "final", "utterance_end")
    assert [(e["type"], e["utterance"]) for e in flow] == [
        ("speech_started", 0), ("final", 0), ("utterance_end", 0),
        ("speech_started", 1), ("final", 1), ("utterance_end", 1),
    ], flow  # fmt: skip
    started, final, ended = flow[0], flow[1], flow[2]
    assert started["at_ms"] <= final["words"][0]["start_ms"]
    assert final["words"][-1]["end_ms"] <= ended["at_ms"]
    first_end_ms = (len(first) + int(0.3 * RATE_HZ)) * 1000 // RATE_HZ
    second_start_ms = first_end_ms + 1000
    assert 200 <= started["at_ms"] and ended["at_ms"] <= first_end_ms + 600
    assert flow[3]["at_ms"] >= second_start_ms - 300  # the second start is after the gap
    assert word_error_rate(SENTENCES[2], flow[4]["text"]) <= 0.3


async def test_update_config_acks_and_applies_endpointing(channel: grpc.aio.Channel) -> None:
    speech = spoken(SENTENCES[0])
    sequence = new_sequence(channel)
    try:
        await sequence.start({"endpointing": {"enabled": True}})
        rejected = await sequence.send(
            control={"update_config": {"id": "bad", "endpointing": {"vad_aggressiveness": 7}}}
        )
        accepted = await sequence.send(
            control={"update_config": {"id": "off", "endpointing": {"enabled": False}}}
        )
        events = await stream_audio(sequence, np.concatenate([speech, silence(1.0)]))
        flushed = await sequence.send(control={"finalize": "f"})
        await sequence.send(end=True)
    finally:
        await sequence.close()
    (bad,) = rejected
    assert bad["type"] == "config_ack" and bad["id"] == "bad" and bad["accepted"] is False
    assert bad["reason"] == "INVALID_CONFIG" and "vad_aggressiveness" in bad["message"]
    assert accepted == [{"type": "config_ack", "id": "off", "accepted": True, "vocabulary": []}]
    # Endpointing is off now: 1 s of silence ends nothing; only finalize produces the final.
    assert not of_type(events, "speech_started", "final", "utterance_end"), events
    assert [e["type"] for e in flushed] == ["final", "finalize_ack"]


async def test_vocabulary_statuses_and_an_added_word_is_recognised(
    channel: grpc.aio.Channel,
) -> None:
    vocabulary: list[dict[str, Any]] = [
        {"phrase": "voxwire", "pronunciation": "V AA1 K S W AY2 ER0", "boost": 5},
        {"phrase": "tomorrow", "boost": 10},
        {"phrase": "zzqxv"},
        {"phrase": "blorfen", "pronunciation": "XX YY"},
    ]
    sequence = new_sequence(channel)
    try:
        (ready,) = await sequence.start(
            {"vocabulary": vocabulary, "endpointing": {"enabled": False}}
        )
        await stream_audio(sequence, spoken("please open voxwire settings now"))
        (final,) = await sequence.send(end=True)
    finally:
        await sequence.close()
    statuses = {v["phrase"]: v for v in ready["vocabulary"]}
    assert [statuses[v["phrase"]]["status"] for v in vocabulary] == [
        "added",
        "known",
        "rejected",
        "rejected",
    ]
    assert "cannot boost" in statuses["tomorrow"]["detail"]
    assert "pronunciation" in statuses["zzqxv"]["detail"]
    assert "XX" in statuses["blorfen"]["detail"]
    assert "voxwire" in final["text"].split(), final["text"]


async def test_update_config_vocabulary(channel: grpc.aio.Channel) -> None:
    sequence = new_sequence(channel)
    try:
        await sequence.start({})
        (ack,) = await sequence.send(
            control={
                "update_config": {
                    "id": "v",
                    "vocabulary": [{"phrase": "quuxly", "pronunciation": "K W AH K S L IY"}],
                }
            }
        )
        await sequence.send(end=True)
    finally:
        await sequence.close()
    assert ack["accepted"] is True and ack["vocabulary"][0]["status"] == "added"


async def test_cancel_drops_the_sequence_silently(channel: grpc.aio.Channel) -> None:
    sequence = new_sequence(channel)
    try:
        await sequence.start({"interim_results": True, "endpointing": {"enabled": False}})
        await stream_audio(sequence, spoken(SENTENCES[1]))
        events = await sequence.send(control={"cancel": True}, end=True)
    finally:
        await sequence.close()
    assert events == []  # no final for the pending speech
    last = sequence.responses[-1]
    assert last.final and last.compute_us is not None


async def test_invalid_requests_are_error_events(channel: grpc.aio.Channel) -> None:
    bad_config = new_sequence(channel)
    good = new_sequence(channel)
    try:
        (error,) = await bad_config.start({"language": "fr-FR"})
        assert error["type"] == "error" and error["reason"] == "INVALID_CONFIG"
        # Triton knows the sequence, the model refused its START: INVALID_MESSAGE.
        (orphan,) = await bad_config.send(audio=silence(0.1))
        assert orphan["type"] == "error" and orphan["reason"] == "INVALID_MESSAGE"
        await good.start({})
        (malformed,) = await good.send(control={"finalize": 42})
        assert malformed["reason"] == "INVALID_MESSAGE"
        # The failing request did not hurt the sequence: it still answers.
        assert await good.send(control={"finalize": "ok"}) == [
            {"type": "finalize_ack", "id": "ok", "audio_ms": 0}
        ]
        await good.send(end=True)
    finally:
        await bad_config.send(end=True)
        await bad_config.close()
        await good.close()


async def vad_timeline(channel: grpc.aio.Channel, audio: np.ndarray, chunk_ms: int) -> list[Event]:
    sequence = new_sequence(channel)
    try:
        await sequence.start({"endpointing": {"silence_ms": 500}})
        events = await stream_audio(sequence, audio, chunk_ms=chunk_ms)
        await sequence.send(end=True)
    finally:
        await sequence.close()
    for final in of_type(events, "final"):
        assert_words_well_formed(final, len(audio) * 1000 // RATE_HZ)
    return of_type(events, "speech_started", "utterance_end")


async def test_chunk_size_does_not_change_the_timeline(channel: grpc.aio.Channel) -> None:
    # The Endpointer takes exact 30 ms frames; remainders carry over between requests, so
    # 7 ms (not a divisor of 30) and 250 ms chunks must give the 100 ms timeline exactly.
    audio = np.concatenate([silence(0.5), spoken(SENTENCES[2]), silence(0.8)])
    timelines = [await vad_timeline(channel, audio, ms) for ms in (100, 7, 250)]
    assert [e["type"] for e in timelines[0]] == ["speech_started", "utterance_end"]
    assert 300 <= timelines[0][0]["at_ms"] <= 800, timelines[0]
    assert timelines[1] == timelines[0] and timelines[2] == timelines[0], timelines
