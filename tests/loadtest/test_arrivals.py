"""Arrival processes and session draws (loadtest/arrivals.py): pure, seeded, no network."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from loadtest.arrivals import arrival_offsets, draw_sessions, session_draws, shard
from loadtest.scenario import ArrivalSpec, Scenario, ScenarioError


def test_constant_rate_is_evenly_spaced() -> None:
    offsets = arrival_offsets(ArrivalSpec(process="constant", rate=4.0), 10.0, seed=1)
    assert len(offsets) == 40
    assert np.allclose(np.diff(offsets), 0.25)
    assert offsets[0] == 0.0


def test_poisson_has_the_rate_and_exponential_gaps() -> None:
    offsets = arrival_offsets(ArrivalSpec(process="poisson", rate=50.0), 200.0, seed=3)
    gaps = np.diff(offsets)
    # 10 000 expected arrivals: the count is within 4 standard deviations (sqrt(10 000) = 100).
    assert abs(len(offsets) - 10_000) < 400
    # Exponential gaps: mean 1/rate and coefficient of variation 1 (constant spacing has 0).
    assert gaps.mean() == pytest.approx(0.02, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)
    assert offsets[0] > 0  # the first arrival is a draw too


def test_poisson_is_reproducible_by_seed() -> None:
    spec = ArrivalSpec(process="poisson", rate=5.0)
    assert arrival_offsets(spec, 20.0, seed=9) == arrival_offsets(spec, 20.0, seed=9)
    assert arrival_offsets(spec, 20.0, seed=9) != arrival_offsets(spec, 20.0, seed=10)


def test_step_rates_hold_per_segment() -> None:
    spec = ArrivalSpec(process="step", steps=((0, 2.0), (5, 10.0), (8, 0.0)))
    offsets = np.array(arrival_offsets(spec, 12.0, seed=1))
    assert ((offsets >= 0) & (offsets < 5)).sum() == 10
    assert ((offsets >= 5) & (offsets < 8)).sum() == 30
    assert (offsets >= 8).sum() == 0


def test_step_must_start_at_zero() -> None:
    with pytest.raises(ScenarioError):
        arrival_offsets(ArrivalSpec(process="step", steps=((1, 2.0),)), 5.0, seed=1)


def test_ramp_count_is_the_integral_and_density_rises() -> None:
    spec = ArrivalSpec(process="ramp", rate=1.0, to_rate=21.0)
    offsets = np.array(arrival_offsets(spec, 10.0, seed=1))
    assert len(offsets) == pytest.approx((1 + 21) / 2 * 10, abs=1)  # 110
    first, last = (offsets < 5).sum(), (offsets >= 5).sum()
    # Integral of the rate over each half: 1*5 + 10*5/2 = 30, and 110 - 30 = 80.
    assert first == pytest.approx(30, abs=1) and last == pytest.approx(80, abs=1)
    assert np.all(np.diff(offsets) > 0)


def test_burst_multiplies_the_rate_in_its_window() -> None:
    spec = ArrivalSpec(process="burst", rate=2.0, burst_factor=10.0, burst_at_s=5.0, burst_s=5.0)
    offsets = np.array(arrival_offsets(spec, 20.0, seed=1))
    inside = ((offsets >= 5) & (offsets < 10)).sum()
    assert inside == pytest.approx(100, abs=1)
    assert len(offsets) - inside == pytest.approx(30, abs=1)


def test_burst_with_poisson_arrivals() -> None:
    spec = ArrivalSpec(
        process="burst", rate=20.0, burst_factor=10.0, burst_at_s=10.0, burst_s=5.0, random=True
    )
    offsets = np.array(arrival_offsets(spec, 30.0, seed=5))
    inside = ((offsets >= 10) & (offsets < 15)).sum()
    assert abs(inside - 1000) < 4 * np.sqrt(1000)
    assert abs((len(offsets) - inside) - 500) < 4 * np.sqrt(500)


def test_trace_replays_offsets_scaled(tmp_path: Path) -> None:
    trace = tmp_path / "arrivals.csv"
    trace.write_text("# recorded\n0.5,call-a\n2.0\n\n1.0\n9.0\n")
    spec = ArrivalSpec(process="trace", trace=trace, trace_speed=2.0)
    assert arrival_offsets(spec, 4.0, seed=1) == [0.25, 0.5, 1.0]


def test_trace_rejects_garbage(tmp_path: Path) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text("0.5\nsoon\n")
    with pytest.raises(ScenarioError, match="bad.csv:2"):
        arrival_offsets(ArrivalSpec(process="trace", trace=trace), 4.0, seed=1)


def test_shards_partition_the_plan() -> None:
    offsets = arrival_offsets(ArrivalSpec(process="poisson", rate=10.0), 10.0, seed=2)
    shards = [shard(offsets, i, 3) for i in range(3)]
    together = sorted(i for part in shards for i, _ in part)
    assert together == list(range(len(offsets)))
    assert all(offsets[i] == t for part in shards for i, t in part)


def test_session_draws_are_deterministic_and_mixed_by_share() -> None:
    mixed = dataclasses.replace(Scenario(), kind="mixed", stt_share=0.7)
    draws = draw_sessions(mixed, 2000)
    assert draws == draw_sessions(mixed, 2000)
    share = sum(d.kind == "stt" for d in draws) / len(draws)
    assert share == pytest.approx(0.7, abs=0.04)
    # Slots of a fixed concurrency draw different sequences (and start at different files).
    slot0, slot1 = session_draws(mixed, 0), session_draws(mixed, 1)
    assert next(slot0).first_file != next(slot1).first_file


def test_session_lengths_follow_the_distribution() -> None:
    s = Scenario()
    lengths = dataclasses.replace(s.stt.length, distribution="exponential", mean=8.0)
    scenario = dataclasses.replace(s, stt=dataclasses.replace(s.stt, length=lengths))
    values = np.array([d.length_s for d in draw_sessions(scenario, 4000)])
    assert values.mean() == pytest.approx(8.0, rel=0.06)


def test_a_tts_sessions_length_is_not_stt_length() -> None:
    # A closed loop's slot stops before a session that would run past the run's end, judged by
    # its length: TTS sessions took stt.length's, so with a fixed length of the run's duration
    # (as benchmarks.record sets it) each slot ran one TTS session and stopped.
    s = Scenario()
    fixed = dataclasses.replace(s.stt.length, distribution="fixed", seconds=10.0)
    mixed = dataclasses.replace(
        s, kind="mixed", stt_share=0.5, stt=dataclasses.replace(s.stt, length=fixed)
    )
    draws = draw_sessions(mixed, 200)
    assert {d.length_s for d in draws if d.kind == "tts"} == {0.0}
    assert {d.length_s for d in draws if d.kind == "stt"} == {10.0}


def test_a_huge_rate_plans_only_the_sessions_the_run_may_start():
    # A rate of 1e6 a second built its millions of offsets (seconds, after the run's start)
    # before the max_sessions cap threw all but the first away.
    spec = ArrivalSpec(process="constant", rate=1e6)
    offsets = arrival_offsets(spec, 20.0, seed=1, limit=1000)
    assert len(offsets) == 1000 and offsets == sorted(offsets) and offsets[-1] < 0.001
