"""When sessions start (open-model arrival processes) and how long they last.

Every open process is a rate curve lambda(t), piecewise linear in time, and arrivals come from
the time-rescaling theorem: with Lambda(t) the integral of lambda, the n-th arrival is at
Lambda^-1(u_n), where u_n = n for evenly spaced arrivals and u_n = a sum of n Exp(1) draws for a
Poisson process (Brown et al., "The time-rescaling theorem and its application to neural spike
train data analysis", Neural Computation 14, 2002). So constant, step, ramp and burst share one
inversion, each with or without randomness. A trace replays recorded offsets. Fixed
concurrency has no arrival list: each slot starts its next session when the last one ends.

All of it is pure and seeded: every worker computes the same plan and takes its share.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loadtest.scenario import ArrivalSpec, LengthSpec, Scenario, ScenarioError


@dataclass(frozen=True, slots=True)
class Segment:
    start_s: float
    end_s: float
    rate_start: float
    rate_end: float

    @property
    def area(self) -> float:
        return (self.rate_start + self.rate_end) / 2 * (self.end_s - self.start_s)

    def time_for(self, area: float) -> float:
        """The time within this segment at which ``area`` arrivals (expected) have built up."""
        a, length = self.rate_start, self.end_s - self.start_s
        slope = (self.rate_end - a) / length
        if abs(slope) < 1e-12:
            return self.start_s + area / a
        # a*t + slope*t^2/2 = area; the positive root.
        return self.start_s + (-a + math.sqrt(max(0.0, a * a + 2 * slope * area))) / slope


def rate_curve(spec: ArrivalSpec, duration_s: float) -> list[Segment]:
    """The piecewise-linear rate (sessions/s) over [0, duration_s]. Raises ScenarioError."""
    p = spec.process
    if p in ("poisson", "constant"):
        return [Segment(0.0, duration_s, spec.rate, spec.rate)]
    if p == "ramp":
        return [Segment(0.0, duration_s, spec.rate, spec.to_rate)]
    if p == "burst":
        a, b = spec.burst_at_s, min(duration_s, spec.burst_at_s + spec.burst_s)
        high = spec.rate * spec.burst_factor
        cuts = [(0.0, a, spec.rate), (a, b, high), (b, duration_s, spec.rate)]
        return [Segment(s, e, r, r) for s, e, r in cuts if e > s]
    if p == "step":
        if not spec.steps or spec.steps[0][0] != 0:
            raise ScenarioError("arrivals.steps must start at second 0: [[0, rate], ...]")
        bounds = [*(float(t) for t, _ in spec.steps), duration_s]
        out = []
        for (start, rate), end in zip(spec.steps, bounds[1:], strict=True):
            if float(rate) < 0 or end < start:
                raise ScenarioError("arrivals.steps: ascending seconds, rates >= 0")
            if end > start:
                out.append(Segment(float(start), min(end, duration_s), float(rate), float(rate)))
        return out
    raise ScenarioError(f"no rate curve for process {p!r}")


def invert(curve: list[Segment], units: Iterator[float]) -> Iterator[float]:
    """Lambda^-1 of increasing ``units``; stops at the end of the curve."""
    passed = 0.0  # area of the segments before the current one
    segments = iter(curve)
    segment = next(segments, None)
    for u in units:
        while segment is not None and u >= passed + segment.area:
            passed += segment.area
            segment = next(segments, None)
        if segment is None:
            return
        if segment.area > 0:
            yield segment.time_for(u - passed)


def _units(random: bool, rng: np.random.Generator) -> Iterator[float]:
    # Poisson: the first arrival is an Exp(1) draw too, not at zero.
    total = float(rng.exponential(1.0)) if random else 0.0
    n = 0
    while True:
        yield total
        n += 1
        total = total + float(rng.exponential(1.0)) if random else float(n)


def read_trace(path: Path, speed: float) -> list[float]:
    """Offsets (s) from a file: one number per line (first CSV column), '#' comments.
    Raises ScenarioError for a line that is not a number, OSError for an unreadable file."""
    offsets = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        cell = line.split("#", 1)[0].split(",", 1)[0].strip()
        if not cell:
            continue
        try:
            offsets.append(float(cell) / speed)
        except ValueError as exc:
            raise ScenarioError(f"{path}:{number}: {cell!r} is not a number") from exc
    return sorted(o for o in offsets if o >= 0)


def arrival_offsets(
    spec: ArrivalSpec, duration_s: float, seed: int, limit: int | None = None
) -> list[float]:
    """Intended session start times (s after the run's start) of an open process; the first
    ``limit`` of them (the run's max_sessions: a rate of 1e6 a second built millions of
    offsets, for seconds, after the run's start, before the cap threw them away)."""
    if spec.process == "concurrency":
        raise ScenarioError("fixed concurrency has no arrival list")
    if spec.process == "trace":
        assert spec.trace is not None
        return [t for t in read_trace(spec.trace, spec.trace_speed) if t < duration_s][:limit]
    rng = np.random.default_rng(seed)
    random = spec.random or spec.process == "poisson"
    planned = (t for t in invert(rate_curve(spec, duration_s), _units(random, rng)))
    return list(itertools.islice((t for t in planned if t < duration_s), limit))


@dataclass(frozen=True, slots=True)
class SessionDraw:
    """What one session is: its kind, its audio length (STT), its first speech file."""

    index: int
    kind: str
    length_s: float
    first_file: int


def draw_length(spec: LengthSpec, rng: np.random.Generator) -> float:
    """Seconds of audio (0 for ``files``: the count of files decides)."""
    d = spec.distribution
    if d == "fixed":
        return spec.seconds
    if d == "uniform":
        return float(rng.uniform(spec.low, spec.high))
    if d == "exponential":
        return float(rng.exponential(spec.mean))
    if d == "lognormal":
        return float(rng.lognormal(math.log(spec.median), spec.sigma))
    return 0.0


def session_draws(scenario: Scenario, stream: int) -> Iterator[SessionDraw]:
    """The sessions of one arrival stream (0 for an open process, the slot for fixed
    concurrency), in order: their kinds and lengths, the same in every worker."""
    rng = np.random.default_rng([scenario.limits.seed, stream])
    index = 0
    while True:
        kind = scenario.kind
        if kind == "mixed":
            kind = "stt" if rng.random() < scenario.stt_share else "tts"
        # Slots start at different files so that concurrent streams do not all say the same.
        first = stream * 7919 + index
        # Drawn for every session (the stream of draws stays the same whatever the kinds), but
        # a TTS session's length is its turns', not known ahead: 0, so that a closed loop's
        # slot does not take stt.length for it and stop after one session.
        length = draw_length(scenario.stt.length, rng)
        yield SessionDraw(index, kind, length if kind == "stt" else 0.0, first)
        index += 1


def draw_sessions(scenario: Scenario, count: int) -> list[SessionDraw]:
    """The first ``count`` sessions of an open process."""
    return list(itertools.islice(session_draws(scenario, 0), count))


def shard(items: list[float], index: int, count: int) -> list[tuple[int, float]]:
    """Worker ``index`` of ``count`` takes every count-th item (with its global index)."""
    return [(i, t) for i, t in enumerate(items) if i % count == index]
