"""bench_stt and bench_tts through a real Triton: one response per request, many at once."""

from __future__ import annotations

import asyncio
import itertools
import time

import grpc
import numpy as np

from tests.models.triton_io import (
    Event,
    ModelResponse,
    ModelStream,
    SttSequence,
    audio_of,
    events_of,
    tts_request,
)

TRANSCRIPT = "the quick brown fox jumps over the lazy dog".split()
_sequence_ids = itertools.count(2_000_001)
CHUNK = np.zeros(1600, dtype=np.int16)  # 100 ms at 16 kHz


async def bench_stt_session(channel: grpc.aio.Channel, chunks: int) -> list[list[Event]]:
    """START, ``chunks`` audio requests, finalize, END: the events of each request."""
    sequence = SttSequence(channel, "bench_stt", next(_sequence_ids))
    try:
        answers = [await sequence.start({"interim_results": True})]
        for _ in range(chunks):
            answers.append(await sequence.send(audio=CHUNK))
        answers.append(await sequence.send(control={"finalize": "f"}))
        answers.append(await sequence.send(audio=CHUNK, end=True))
    finally:
        await sequence.close()
    # One response per request, and it is the final one.
    assert len(sequence.responses) == len(answers) and all(r.final for r in sequence.responses)
    assert all(r.compute_us is not None and r.compute_us >= 2000 for r in sequence.responses)
    return answers


async def test_bench_stt_answers_each_request(channel: grpc.aio.Channel) -> None:
    answers = await bench_stt_session(channel, chunks=4)
    assert answers[0] == [{"type": "ready", "vocabulary": []}]
    interims = [a[0] for a in answers[1:5]]
    assert [i["text"] for i in interims] == [" ".join(TRANSCRIPT[:n]) for n in range(1, 5)]
    assert [i["end_ms"] for i in interims] == [100, 200, 300, 400]
    final, ack = answers[5]
    assert (
        final["type"] == "final"
        and final["from_finalize"]
        and final["text"] == " ".join(TRANSCRIPT)
    )
    starts = [w["start_ms"] for w in final["words"]]
    assert starts == sorted(starts) and final["words"][-1]["end_ms"] == 400
    assert ack == {"type": "finalize_ack", "id": "f", "audio_ms": 400}
    last_interim, last_final = answers[6]
    assert last_interim["utterance"] == 1 and last_final["start_ms"] == 400
    assert last_final["end_ms"] == 500 and not last_final["from_finalize"]


async def test_bench_stt_serves_50_concurrent_sequences(channel: grpc.aio.Channel) -> None:
    began = time.monotonic()
    results = await asyncio.gather(*(bench_stt_session(channel, chunks=10) for _ in range(50)))
    elapsed = time.monotonic() - began
    print(f"50 bench_stt sequences x 13 requests in {elapsed:.2f} s")
    for answers in results:
        assert answers[-2][-1]["type"] == "finalize_ack" and answers[-2][-1]["audio_ms"] == 1000
    assert elapsed < 20


async def bench_tts(channel: grpc.aio.Channel, text: str) -> tuple[list[ModelResponse], float]:
    stream = ModelStream(channel)
    try:
        began = time.monotonic()
        responses = await stream.request(tts_request("bench_tts", text, {}))
        return responses, time.monotonic() - began
    finally:
        await stream.close()


async def test_bench_tts_tone_words_and_pacing(channel: grpc.aio.Channel) -> None:
    text = "one two three four five six seven eight nine ten"
    responses, elapsed = await bench_tts(channel, text)
    audio = audio_of(responses)
    assert audio.size == 10 * 300 * 24 and np.abs(audio).max() > 5000  # 10 words x 300 ms
    assert sum(r.audio.size > 0 for r in responses) == 30  # 100 ms chunks
    assert responses[-1].final and events_of(responses, "done")[0]["samples"] == audio.size
    words = [w for e in events_of(responses, "words") for w in e["words"]]
    assert [w["word"] for w in words] == text.split()
    assert [w["start_ms"] for w in words] == list(range(0, 3000, 300))
    assert all(text[w["text_offset"] :].startswith(w["word"]) for w in words)
    # 3 s of audio at rtf 0.05 = 150 ms of "synthesis": paced (not instant); the upper bound
    # only catches a model far off its rtf, with room for a busy CI machine.
    assert 0.1 < elapsed < 5.0


async def test_bench_tts_serves_requests_concurrently(channel: grpc.aio.Channel) -> None:
    """One instance, yet requests overlap: each request's audio spans a time interval (first
    to last response read), and a model serving one request at a time makes those intervals
    disjoint. Asserted on the intervals, not on a wall-clock ratio that a busy CI machine can
    push over any fixed line (it once measured 1.233 s against a 1.232 s limit)."""
    text = "one two three four five six seven eight nine ten"
    _, single = await bench_tts(channel, text)
    began = time.monotonic()
    results = await asyncio.gather(*(bench_tts(channel, text) for _ in range(20)))
    together = time.monotonic() - began
    assert all(audio_of(r).size == 72000 for r, _ in results)
    spans = [(r[0].received_at, r[-1].received_at) for r, _ in results]
    overlap = max(sum(a <= t <= b for a, b in spans) for t, _ in spans)
    print(
        f"bench_tts: one request {single * 1000:.0f} ms, 20 concurrent {together * 1000:.0f} ms,"
        f" at most {overlap} of 20 producing audio at once"
    )
    assert overlap >= 10
