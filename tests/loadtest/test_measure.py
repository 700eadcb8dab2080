"""STT measurement definitions (loadtest/measure.py), fed known events."""

from __future__ import annotations

import pytest

from loadtest.events import Ack, Result, Started
from loadtest.measure import SttMeasure
from loadtest.recorder import Recorder


def _measure(warm_until: float = float("-inf")) -> tuple[Recorder, SttMeasure]:
    rec = Recorder()
    m = SttMeasure(rec, intended_start=100.0, chunk_ms=100, warm_until=warm_until)
    for i in range(10):
        m.sent(100.5 + i * 0.1)  # chunk i due at 100.5 + 0.1 i
    return rec, m


def test_results_answer_the_chunk_holding_their_end() -> None:
    rec, m = _measure()
    m.on_event(Started(100.02))
    m.on_event(Result(100.61, False, "the", 100))  # end_ms 100: chunk 0
    m.on_event(Result(100.78, False, "the quick", 250))  # end_ms 250: chunk 2 (200-300 ms)
    m.on_event(Result(101.52, True, "the quick brown fox", 1000))  # the last chunk, 9
    assert rec.percentile_ms("session.setup", 100) == pytest.approx(20, rel=0.01)
    message = rec.total["stt.message"]
    assert message.get_total_count() == 3
    assert message.get_min_value() == pytest.approx(80_000, rel=0.01)  # 100.78 - 100.7
    assert rec.percentile_ms("stt.first_result", 100) == pytest.approx(110, rel=0.01)
    assert rec.percentile_ms("stt.final", 100) == pytest.approx(120, rel=0.01)  # 101.52-101.4
    assert m.finals == ["the quick brown fox"]


def test_acks_answer_their_own_chunk() -> None:
    rec, m = _measure()
    m.on_event(Ack(100.503, 0))
    m.on_event(Ack(101.001, 5))
    assert sorted(v for v, _ in _values(rec, "stt.message")) == pytest.approx(
        [1000, 3000], rel=0.01
    )


def test_warm_up_inputs_are_not_recorded() -> None:
    rec, m = _measure(warm_until=100.75)
    m.on_event(Result(100.61, False, "the", 100))  # chunk 0, due 100.5: warm-up
    m.on_event(Result(100.9, False, "the quick", 400))  # chunk 3, due 100.8: counted
    assert rec.total["stt.message"].get_total_count() == 1


def test_covered_times_every_chunk_a_result_reflects() -> None:
    rec, m = _measure()
    m.on_event(Result(100.61, False, "the", 100))  # chunk 0 (due 100.5)
    m.on_event(Result(100.93, False, "the quick", 400))  # chunks 1-3 (due 100.6-100.8)
    m.on_event(Result(100.95, False, "the quick", 350))  # nothing new
    assert sorted(v for v, _ in _values(rec, "stt.covered")) == pytest.approx(
        [110_000, 130_000, 230_000, 330_000], rel=0.01
    )
    # stt.message times each result from the newest chunk it reflects.
    assert sorted(v for v, _ in _values(rec, "stt.message")) == pytest.approx(
        [110_000, 130_000, 150_000], rel=0.01
    )


def test_covered_of_echoes_times_each_echoed_chunk() -> None:
    rec, m = _measure()
    m.on_event(Ack(100.503, 0))
    m.on_event(Ack(100.604, 1))
    assert sorted(v for v, _ in _values(rec, "stt.covered")) == pytest.approx(
        [3000, 4000], rel=0.01
    )


def _values(rec: Recorder, metric: str) -> list[tuple[int, int]]:
    h = rec.total[metric]
    return [(i.value_iterated_to, i.count_at_value_iterated_to) for i in h.get_recorded_iterator()]
