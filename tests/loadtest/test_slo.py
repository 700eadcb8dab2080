"""SLO verdicts and the bisection search, on known distributions (loadtest/slo.py)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from loadtest.hdrlog import new_histogram
from loadtest.merge import Merged
from loadtest.scenario import Objective, SearchSpec, SloSpec
from loadtest.slo import (
    judge,
    min_samples,
    more_repeats,
    quantile_upper_bound_ms,
    search,
    upper_rank,
    wilson_upper,
)


def _binom_cdf(k: int, n: int, p: float) -> float:
    """Exact, independent of the module: 1 - the upper tail, summed in exact fractions."""
    from fractions import Fraction

    fp = Fraction(p).limit_denominator(10**6)
    tail = sum(math.comb(n, i) * fp**i * (1 - fp) ** (n - i) for i in range(k + 1, n + 1))
    return float(1 - tail)


@pytest.mark.parametrize(
    ("n", "q", "c"), [(300, 0.99, 0.95), (1000, 0.99, 0.9), (50, 0.5, 0.95), (4000, 0.999, 0.95)]
)
def test_upper_rank_is_the_smallest_rank_with_the_coverage(n: int, q: float, c: float) -> None:
    k = upper_rank(n, q, c)
    assert k is not None
    assert _binom_cdf(k - 1, n, q) >= c  # coverage: P(Bin(n, q) <= k - 1) >= c
    assert _binom_cdf(k - 2, n, q) < c  # and k - 1 would not have it


def test_too_few_samples_give_no_bound() -> None:
    # 0.99^n >= 0.05 for n <= 298: even the maximum is not a 95 % bound on p99.
    assert upper_rank(298, 0.99, 0.95) is None
    assert upper_rank(299, 0.99, 0.95) == 299


def test_bound_covers_the_true_quantile_at_the_stated_rate() -> None:
    rng = np.random.default_rng(1)
    true_p99_ms = -math.log(0.01) * 10.0  # exponential, mean 10 ms
    covered = 0
    for _ in range(200):
        h = new_histogram()
        for v in rng.exponential(10_000.0, 1000):
            h.record_value(max(1, int(v)))
        bound, _ = quantile_upper_bound_ms(h, 99.0, 0.9)
        covered += bound is not None and bound >= true_p99_ms * 0.999
    assert covered / 200 >= 0.84  # nominal 90 %, with room for 200 trials' noise


def test_wilson_upper_bound() -> None:
    assert wilson_upper(0, 3000, 0.95) < 0.001
    assert wilson_upper(0, 1000, 0.95) > 0.001
    assert wilson_upper(50, 1000, 0.95) == pytest.approx(0.0625, abs=0.003)


def _merged(level: float, rng: np.random.Generator, n: int = 20_000) -> Merged:
    """A run at ``level`` of a synthetic service: exponential latency whose mean grows like a
    queue's, 10 / (1 - level / 200) ms, and one failed session in 10 000."""
    merged = Merged()
    h = merged.totals.setdefault("stt.final", new_histogram())
    for v in rng.exponential(10_000.0 / (1 - level / 200.0), n):
        h.record_value(max(1, int(v)))
    merged.counters.update({"sessions.ok": 9999, "sessions.failed": 1})
    return merged


SLO = SloSpec(objectives=(Objective("stt.final", 99.0, 300.0),), max_error_rate=0.001)
# p99 = mean * ln(100) = 300 ms  <=>  1 - L/200 = 10 ln(100) / 300
KNEE = 200.0 * (1 - 10.0 * math.log(100) / 300.0)  # 169.3


def test_judge_holds_below_the_knee_and_misses_above() -> None:
    rng = np.random.default_rng(2)
    assert judge(_merged(150, rng), SLO).passed
    verdict = judge(_merged(185, rng), SLO)
    assert not verdict.passed
    assert [c.passed for c in verdict.checks] == [False, True, True]


def test_search_finds_the_knee_of_a_known_curve() -> None:
    rng = np.random.default_rng(3)
    spec = SearchSpec(over="rate", low=10.0, high=199.0, tolerance=1.0)
    result = search(lambda level: judge(_merged(level, rng), SLO), spec)
    assert result.best is not None
    # Within tolerance of the knee, and not above it beyond the sampling noise of 20 000.
    assert KNEE - 6.0 <= result.best <= KNEE + 1.0
    levels = [p["level"] for p in result.path]
    assert levels[:2] == [10.0, 199.0] and len(levels) <= 12


def test_search_over_concurrency_probes_integers() -> None:
    rng = np.random.default_rng(4)
    spec = SearchSpec(over="concurrency", low=1, high=199, tolerance=1)
    result = search(lambda level: judge(_merged(level, rng), SLO), spec)
    assert all(float(p["level"]).is_integer() for p in result.path)
    assert result.best is not None and KNEE - 6 <= result.best <= KNEE + 1


def test_search_reports_when_even_the_lowest_level_fails() -> None:
    rng = np.random.default_rng(5)
    spec = SearchSpec(over="rate", low=190.0, high=199.0)
    result = search(lambda level: judge(_merged(level, rng), SLO), spec)
    assert result.best is None and len(result.path) == 1


def test_p100_is_judged_on_the_observed_maximum() -> None:
    # `--slo 'stt.final:p100<=X'` was accepted and always failed as "not enough samples": no
    # rank bounds the maximum. A user asking for p100 means "no sample above X".
    merged = Merged()
    h = merged.totals.setdefault("stt.final", new_histogram())
    for ms in (120, 250, 280):
        h.record_value(ms * 1000)
    merged.counters.update({"sessions.ok": 3})
    held = judge(merged, SloSpec(objectives=(Objective("stt.final", 100.0, 300.0),)))
    check = held.checks[0]
    assert held.passed and check.passed and check.samples == 3
    assert check.observed == pytest.approx(280, rel=0.001) and "maximum" in check.note
    missed = judge(merged, SloSpec(objectives=(Objective("stt.final", 100.0, 260.0),)))
    assert not missed.passed and not missed.checks[0].passed
    assert "not enough samples" not in missed.checks[0].note


def test_a_trial_no_longer_than_the_warm_up_is_refused_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each trial runs trial_s with the scenario's warm-up: a trial that ends before the warm-up
    # does records nothing, and every level "missed" as "no samples" after the whole search.
    from loadtest import cli, runner

    def no_trial(*args: object, **kwargs: object) -> None:
        raise AssertionError("a trial ran")

    monkeypatch.setattr(runner, "run", no_trial)
    argv = ["slo", "--slo", "stt.final:p99<=300", "--warmup", "5", "--trial", "5"]
    with pytest.raises(SystemExit) as exited:
        cli.main([*argv, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--trial" in err and "--warmup" in err, err


def _fake_runs(
    monkeypatch: pytest.MonkeyPatch, make: Callable[[Any], Merged]
) -> dict[Path, Merged]:
    """The search's runs made by ``make(scenario)`` (no load generated), each kept by its
    folder, and its merge pooling those under the folders it is given. Returns the runs."""
    from loadtest import cli, runner

    runs: dict[Path, Merged] = {}

    def run(s: object, folder: Path, **kwargs: object) -> Merged:
        runs[folder] = make(s)
        return runs[folder]

    def merge(roots: list[Path], **kwargs: object) -> Merged:
        pooled = Merged()
        for folder, m in runs.items():
            if any(folder.is_relative_to(root) for root in roots):
                for metric, h in m.totals.items():
                    pooled.totals.setdefault(metric, new_histogram()).add(h)
                pooled.counters.update(m.counters)
        return pooled

    monkeypatch.setattr(runner, "run", run)
    monkeypatch.setattr(cli, "merge", merge)
    return runs


def test_when_no_level_holds_the_result_is_the_lowest_levels_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # With no level held, the result was a merge of every run under --out: other levels (here
    # an earlier search's, in the same folder) pooled into one set of numbers, and no verdict
    # said which level missed how.
    import json

    from loadtest import cli

    rng = np.random.default_rng(6)
    out = tmp_path / "search"
    runs = _fake_runs(monkeypatch, lambda s: _merged(s.arrivals.rate, rng, 2000))
    runs[out / "level-10" / "repeat-0"] = _merged(10, rng, 2000)  # an earlier search's
    argv = ["slo", "--slo", "stt.final:p99<=300", "--search-low", "190", "--search-high", "199"]
    with pytest.raises(SystemExit) as exited:
        cli.main([*argv, "--search-repeats", "2", "--trial", "1", "--out", str(out), "--quiet"])
    assert exited.value.code == 1
    result = json.loads((out / "result.json").read_text())
    assert result["search"]["best"] is None and result["search"]["figures_at"] == 190
    assert result["scenario"]["arrivals"]["rate"] == 190
    assert result["metrics"]["stt.final"]["count"] == 2 * 2000  # its two repeats, nothing else
    verdict = result["slo"]
    assert not verdict["passed"] and not verdict["checks"][0]["passed"]
    # Level 190's p99: 10 / (1 - 190/200) ms x ln(100) = 921 ms.
    assert verdict["checks"][0]["observed"] == pytest.approx(921, rel=0.15)
    printed = capsys.readouterr().out
    assert "no rate held the SLO" in printed and "stt.final p99 <= 300 ms" in printed, printed
    assert printed.count("stt.final p99 <= 300 ms") == 1, printed  # said once, not twice
    assert "no level held" in (out / "report.html").read_text()


def test_the_result_and_the_verdict_count_the_same_error_rate() -> None:
    """A refused session is an error in both: the report's rate is the one the SLO judged."""
    from loadtest import results
    from loadtest.scenario import Scenario

    merged = _merged(100, np.random.default_rng(3))
    for name, count in (("ok", 96), ("failed", 1), ("cut", 1), ("refused", 2)):
        merged.counters[f"sessions.{name}"] = count
    verdict = judge(merged, SloSpec(objectives=(), max_error_rate=0.05))
    (check,) = [c for c in verdict.checks if c.name.startswith("error rate")]
    reported = results.build(merged, Scenario().to_dict(), {})["sessions"]
    assert reported["error_rate"] == check.observed == pytest.approx(4 / 100)
    assert check.passed and reported["refused"] == 2
    merged.counters["sessions.refused"] = 6  # 8 of 104 now: over 5 %, failed, in both
    verdict = judge(merged, SloSpec(objectives=(), max_error_rate=0.05))
    (check,) = [c for c in verdict.checks if c.name.startswith("error rate")]
    assert not check.passed
    assert results.build(merged, Scenario().to_dict(), {})["sessions"]["error_rate"] == (
        pytest.approx(8 / 104)
    )


def test_a_run_without_sessions_has_no_error_rate() -> None:
    from loadtest import results
    from loadtest.scenario import Scenario

    assert results.build(Merged(), Scenario().to_dict(), {})["sessions"]["error_rate"] is None


@pytest.mark.parametrize(
    ("percentile", "confidence"), [(99, 0.95), (95, 0.95), (99.9, 0.9), (50, 0.99)]
)
def test_min_samples_is_where_a_bound_begins(percentile: float, confidence: float) -> None:
    n = min_samples(percentile, confidence)
    assert upper_rank(n - 1, percentile / 100, confidence) is None
    assert upper_rank(n, percentile / 100, confidence) == n
    assert min_samples(99, 0.95) == 299


def _short_run(level: float, rng: np.random.Generator, per_level: int) -> Merged:
    """A run of a service far inside the SLO (p99 about 46 ms) that makes ``per_level``
    samples per unit of level: a low level has too few for a p99 bound."""
    merged = Merged()
    n = round(level * per_level)
    h = merged.totals.setdefault("stt.final", new_histogram())
    for v in rng.exponential(10_000.0, n):
        h.record_value(max(1, int(v)))
    merged.counters.update({"sessions.ok": n})
    return merged


def _search_cli(
    monkeypatch: pytest.MonkeyPatch, out: Path, per_level: int
) -> tuple[int, dict[str, object]]:
    import json

    from loadtest import cli

    rng = np.random.default_rng(7)
    _fake_runs(monkeypatch, lambda s: _short_run(s.arrivals.rate, rng, per_level))
    argv = ["slo", "--slo", "stt.final:p99<=300", "--search-low", "10", "--search-high", "40"]
    with pytest.raises(SystemExit) as exited:
        cli.main([*argv, "--search-repeats", "2", "--trial", "3", "--out", str(out), "--quiet"])
    return int(exited.value.code or 0), json.loads((out / "result.json").read_text())


def test_a_level_short_of_samples_runs_again_until_it_can_be_judged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Level 10 made 100 samples a run: its two repeats pooled 200, short of the 299 a p99
    # bound at 95 % needs, and the search called it missed ("no rate held the SLO") although
    # every sample was a sixth of the limit; a higher level, with more samples, would pass.
    code, result = _search_cli(monkeypatch, tmp_path / "s", 10)
    printed = " ".join(capsys.readouterr().out.split())  # as one line: rich wraps at 80
    assert code == 0, printed
    search = result["search"]
    assert search["best"] == 40  # type: ignore[index]
    first, second = search["path"]  # type: ignore[index]
    assert (first["level"], first["state"], first["runs"]) == (10, "held", 3)
    assert (second["level"], second["state"], second["runs"]) == (40, "held", 2)
    assert "rate 10: inconclusive after 2 runs" in printed and "200 of the 299" in printed


def test_a_level_still_short_at_the_cap_is_inconclusive_not_missed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "s"
    code, result = _search_cli(monkeypatch, out, 2)  # 20 samples a run at level 10
    printed = " ".join(capsys.readouterr().out.split())
    assert code == 1
    verdict = result["slo"]
    assert verdict["state"] == "inconclusive" and verdict["runs"] == 6  # type: ignore[index]
    assert result["search"]["path"][0]["runs"] == 6  # type: ignore[index]  # 3 x repeats
    assert "the lowest, 10, was inconclusive after 6 runs" in printed, printed
    assert "--trial" in printed and "SLO inconclusive" in printed, printed
    assert "missed" not in printed, printed
    assert "(the lowest, 10.0, inconclusive)" in (out / "report.html").read_text()


def test_a_level_that_misses_by_its_figures_is_not_run_again() -> None:
    rng = np.random.default_rng(8)
    verdict = judge(_merged(190, rng, 100), SLO)  # p99 far over 300 ms, 100 samples
    assert not verdict.inconclusive and verdict.state == "missed"
    assert "samples over the limit" in verdict.checks[0].note  # too few for a bound, still
    assert more_repeats(verdict, 6) == 0
    short = judge(_short_run(10, rng, 10), SLO)
    assert short.inconclusive and short.state == "inconclusive"
    assert more_repeats(short, 6) == 2  # 100 a run: two more make 300
    assert more_repeats(dataclasses.replace(short, runs=6), 6) == 0
