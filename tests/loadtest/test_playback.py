"""Playback simulation and TTS measurement: underruns counted on known arrival times."""

from __future__ import annotations

import pytest

from loadtest.events import Audio, ContextDone, ContextFailed
from loadtest.measure import TtsContextMeasure
from loadtest.playback import Playback
from loadtest.recorder import Recorder


def test_chunks_in_time_never_underrun() -> None:
    play = Playback()
    # 100 ms chunks arriving every 50 ms: always ahead of playback.
    assert all(play.chunk(i * 0.05, 0.1) == 0 for i in range(20))
    assert play.underruns == 0 and play.stalled_s == 0


def test_a_late_chunk_stalls_and_shifts_what_follows() -> None:
    play = Playback()
    play.chunk(0.0, 0.1)  # plays 0.0-0.1
    play.chunk(0.05, 0.1)  # due at 0.1: in time; plays 0.1-0.2
    assert play.chunk(0.35, 0.1) == pytest.approx(0.15)  # due at 0.2: 150 ms stall
    # Playback resumed at 0.35, so the next chunk is due at 0.45, not 0.3.
    assert play.chunk(0.44, 0.1) == 0
    assert play.chunk(0.60, 0.1) == pytest.approx(0.05)  # due at 0.55
    assert play.underruns == 2
    assert play.stalled_s == pytest.approx(0.2)


def test_a_jitter_buffer_absorbs_lateness() -> None:
    late = [(0.0, 0.1), (0.18, 0.1), (0.25, 0.1)]
    bare, buffered = Playback(), Playback(delay_s=0.1)
    for at, duration in late:
        bare.chunk(at, duration)
        buffered.chunk(at, duration)
    assert bare.underruns == 1 and bare.stalled_s == pytest.approx(0.08)
    assert buffered.underruns == 0


def test_context_measure_records_first_audio_gaps_and_underruns() -> None:
    rec = Recorder()
    measure = TtsContextMeasure(rec, text_due=10.0, playback=Playback())
    for at in (10.2, 10.25, 10.5, 10.55):  # 100 ms chunks; the third is due at 10.4
        measure.on_event(Audio(at, "c", 0.0, 100.0))
    measure.on_event(ContextDone(10.6, "c"))
    assert rec.percentile_ms("tts.first_audio", 100) == pytest.approx(200, rel=0.01)
    assert rec.total["tts.chunk_gap"].get_total_count() == 3
    assert rec.percentile_ms("tts.chunk_gap", 100) == pytest.approx(250, rel=0.01)
    assert rec.counters["tts.underruns"] == 1
    assert rec.counters["tts.underrun_us"] == pytest.approx(100_000, abs=1)
    assert rec.percentile_ms("tts.underrun", 100) == pytest.approx(100, rel=0.01)
    assert measure.finished


def test_a_failed_context_counts_once_with_its_first_reason() -> None:
    # A refused open is followed by an error for each request the client wrote before it heard
    # (append: UNKNOWN_CONTEXT, close: CONTEXT_NOT_OPEN). Each counted the context again (314
    # contexts from 252 requests on tts_espeak at 14 sessions) and the last one could replace
    # the refusal as the reason the run reported.
    rec = Recorder()
    measure = TtsContextMeasure(rec, text_due=10.0, playback=Playback())
    for at, reason in ((10.01, "OVERLOADED"), (10.02, "UNKNOWN_CONTEXT"), (10.03, "NOT_OPEN")):
        measure.on_event(ContextFailed(at, "c", reason))
    assert measure.failed_reason == "OVERLOADED"
    assert rec.counters["tts.contexts"] == 1
