"""SLO verdicts with a stated confidence, and the search for the highest level that holds.

A latency objective "pXX of METRIC <= L ms" holds at confidence c when a one-sided upper
confidence bound of the pXX quantile is at most L. The bound is distribution-free (order
statistics): with n samples, the number of samples below the true q-quantile is Binomial(n, q),
so the k-th smallest sample is at or above the quantile with probability P(Bin(n, q) <= k-1);
the bound is the smallest k for which that probability reaches c (Hahn and Meeker, *Statistical
Intervals*, 1991, ch. 5). With fewer than ``min_samples`` (299 for p99 at 95 %) no k qualifies:
the objective is neither held nor missed but *inconclusive*, and the search runs the level
again until it has the samples (up to its cap) rather than call a level missed that it never
measured well enough to judge. p100 has no such bound at all (no sample bounds a true
maximum): it is judged on the observed maximum, every sample within the limit, from one sample
on. The error rate is judged on its observed value, with its Wilson upper bound reported beside
it (a bound of 0.1 % at 95 % would need about 3000 error-free sessions per level). Underruns are
a count.

The search bisects over arrival rate or concurrency: each probed level runs ``repeats`` trials,
their histograms pooled, and one verdict is drawn from the pool (more trials while it is
inconclusive, ``more_repeats``). A low level makes fewer samples a trial than a high one, so
without them the verdict would not be monotone in the level even where latency is. The search
assumes the verdict is monotone in the level; the path it took is part of the result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

from hdrh.histogram import HdrHistogram

from loadtest.merge import Merged
from loadtest.results import session_errors
from loadtest.scenario import SearchSpec, SloSpec


def _log_binom_pmf(k: int, n: int, p: float) -> float:
    return (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )


def upper_rank(n: int, q: float, confidence: float) -> int | None:
    """The smallest rank k (1-based) with P(Bin(n, q) <= k - 1) >= confidence, or None if even
    the largest sample is not a bound at that confidence."""
    if n <= 0 or not 0 < q < 1:
        return None
    # Walk the upper tail: samples above the quantile are Bin(n, 1-q); k = n - above.
    tail = 0.0  # P(Bin(n, q) > k - 1) accumulated from the top
    for k in range(n, 0, -1):
        # P(Bin(n, q) == k) moves from the "<= k-1" side to the tail as k decreases.
        tail += math.exp(_log_binom_pmf(k, n, q))
        if 1.0 - tail < confidence:
            return k + 1 if k + 1 <= n else None
        if n - k > 50 * (1 + n * (1 - q)):  # far beyond the tail's mass: stop early
            break
    return None


def min_samples(percentile: float, confidence: float) -> int:
    """The fewest samples that bound the percentile at that confidence: the smallest n with
    1 - q**n >= c (the largest of n samples lies below the q-quantile with probability q**n).
    ``upper_rank`` is None for every smaller n and gives n itself here."""
    q = percentile / 100.0
    n = max(1, math.ceil(math.log1p(-confidence) / math.log(q)))
    # The closed form can land one off in floating point: settle on the exact boundary.
    while 1.0 - q**n < confidence:
        n += 1
    while n > 1 and 1.0 - q ** (n - 1) >= confidence:
        n -= 1
    return n


def surely_above(n: int, over: int, q: float, confidence: float) -> bool:
    """Whether ``over`` of ``n`` samples above a limit show the q-quantile above it at that
    confidence: were the quantile at or below the limit, a sample would exceed it with
    probability at most 1 - q, and P(Bin(n, 1 - q) >= over) < 1 - confidence. Too few samples
    for an upper bound can still be plenty to show a miss."""
    if over <= 0 or not 0 < q < 1:
        return False
    tail = sum(math.exp(_log_binom_pmf(i, n, 1.0 - q)) for i in range(over, n + 1))
    return tail < 1.0 - confidence


def _over_ms(h: HdrHistogram, limit_ms: float) -> int:
    """The samples above ``limit_ms`` (to the histogram's precision)."""
    return sum(
        item.count_at_value_iterated_to
        for item in h.get_recorded_iterator()
        if item.value_iterated_to / 1000.0 > limit_ms
    )


def quantile_upper_bound_ms(h: HdrHistogram, percentile: float, confidence: float):
    """(bound in ms or None, sample count)."""
    n = h.get_total_count()
    rank = upper_rank(n, percentile / 100.0, confidence)
    if rank is None:
        return None, n
    return h.get_value_at_percentile(100.0 * rank / n) / 1000.0, n


def wilson_upper(failures: int, n: int, confidence: float) -> float:
    if n == 0:
        return 1.0
    z = NormalDist().inv_cdf(confidence)
    p = failures / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z * z / n))


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    passed: bool
    observed: float | None
    bound: float | None
    limit: float
    samples: int
    note: str = ""
    # Samples a bound needs; 0 where more cannot change the verdict (p100, a sure miss).
    needed: int = 0

    @property
    def short(self) -> bool:
        """Failed for want of samples alone: more of them can decide it either way. (With
        none at all there is no rate to plan more runs by, and it stays missed.)"""
        return not self.passed and 0 < self.samples < self.needed


@dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool
    confidence: float
    checks: tuple[Check, ...]
    runs: int = 1  # the runs pooled into it (a search level's repeats)

    @property
    def inconclusive(self) -> bool:
        """Not held, and every check that failed is short of samples: nothing was measured
        to miss."""
        failed = [c for c in self.checks if not c.passed]
        return bool(failed) and all(c.short for c in failed)

    @property
    def state(self) -> str:
        return "held" if self.passed else "inconclusive" if self.inconclusive else "missed"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "state": self.state}


def state_of(verdict: dict[str, Any]) -> str:
    """A verdict's state from its JSON (results written before states existed: held or
    missed)."""
    return str(verdict.get("state") or ("held" if verdict["passed"] else "missed"))


def more_repeats(verdict: Verdict, cap: int) -> int:
    """How many more runs an inconclusive verdict needs, at the samples per run its runs have
    made so far, for every short check to reach its need (runs vary: the caller judges
    again and asks again); 0 when the verdict is decided or ``cap`` runs are reached."""
    if not verdict.inconclusive or verdict.runs >= cap:
        return 0
    more = max(
        math.ceil((c.needed - c.samples) * verdict.runs / c.samples)
        for c in verdict.checks
        if c.short
    )
    return min(max(more, 1), cap - verdict.runs)


def figure(check_name: str, value: float | None) -> str:
    """A check's figure as its name states it: the error rate's in %, latencies in ms as
    measured ("-" for none)."""
    if value is None:
        return "-"
    return f"{value:.2%}" if check_name.startswith("error rate") else f"{value:g}"


def judge(merged: Merged, slo: SloSpec) -> Verdict:
    """The SLO verdict of one (pooled) run."""
    checks = []
    for o in slo.objectives:
        h = merged.totals.get(o.metric)
        name = f"{o.metric} p{o.percentile:g} <= {o.max_ms:g} ms"
        if h is None or not h.get_total_count():
            checks.append(Check(name, False, None, None, o.max_ms, 0, "no samples"))
            continue
        observed = h.get_value_at_percentile(o.percentile) / 1000.0
        if o.percentile >= 100:
            # No sample bounds the true maximum, at any confidence: p100 means "no sample
            # above the limit", judged on the observed maximum (one sample is enough).
            n = h.get_total_count()
            note = "p100: the observed maximum, every sample judged; no confidence bound"
            checks.append(Check(name, observed <= o.max_ms, observed, None, o.max_ms, n, note))
            continue
        bound, n = quantile_upper_bound_ms(h, o.percentile, slo.confidence)
        needed = min_samples(o.percentile, slo.confidence)
        note = ""
        if bound is None:
            over = _over_ms(h, o.max_ms)
            if surely_above(n, over, o.percentile / 100.0, slo.confidence):
                # Missed, whatever more samples would say: no rerun (``Check.short``).
                needed = 0
                note = (
                    f"{over} of {n} samples over the limit: the p{o.percentile:g} is above "
                    f"it at {slo.confidence:.0%} confidence, with too few samples for a bound"
                )
            else:
                note = (
                    f"not enough samples for the bound: {n} of the {needed} a "
                    f"p{o.percentile:g} bound at {slo.confidence:.0%} confidence needs"
                )
        checks.append(
            Check(
                name,
                bound is not None and bound <= o.max_ms,
                observed,
                bound,
                o.max_ms,
                n,
                note,
                needed,
            )
        )
    c = merged.counters
    bad, total = session_errors(c)
    rate = bad / total if total else 1.0
    checks.append(
        Check(
            f"error rate <= {slo.max_error_rate:.2%}",
            total > 0 and rate <= slo.max_error_rate,
            rate,
            wilson_upper(bad, total, slo.confidence),
            slo.max_error_rate,
            total,
            "judged on the observed rate; bound is Wilson's",
        )
    )
    underruns = c.get("tts.underruns", 0)
    checks.append(
        Check(
            f"underruns <= {slo.max_underruns}",
            underruns <= slo.max_underruns,
            float(underruns),
            None,
            float(slo.max_underruns),
            c.get("tts.contexts", 0),
        )
    )
    return Verdict(all(ch.passed for ch in checks), slo.confidence, tuple(checks))


@dataclass(slots=True)
class SearchResult:
    best: float | None  # the highest level that held (None: not even the lowest)
    over: str
    path: list[dict[str, Any]] = field(default_factory=list)  # level, passed, state, runs, checks

    def to_dict(self) -> dict[str, Any]:
        return {"best": self.best, "over": self.over, "path": self.path}


def search(trial: Callable[[float], Verdict], spec: SearchSpec) -> SearchResult:
    """Bisection for the highest level in [low, high] whose verdict holds, to within
    ``tolerance``; ``trial(level)`` runs (and pools) the repeats of one level."""
    integer = spec.over == "concurrency"
    result = SearchResult(None, spec.over)

    def probe(level: float) -> bool:
        verdict = trial(level)
        result.path.append(
            {
                "level": level,
                "passed": verdict.passed,
                "state": verdict.state,
                "runs": verdict.runs,
                "checks": [asdict(c) for c in verdict.checks],
            }
        )
        return verdict.passed

    low, high = (round(spec.low), round(spec.high)) if integer else (spec.low, spec.high)
    if not probe(low):
        return result
    if probe(high):
        result.best = high
        return result
    while high - low > max(spec.tolerance, 1 if integer else 0):
        middle = (low + high) / 2
        if integer:
            middle = round(middle)
            if middle in (low, high):
                break
        low, high = (middle, high) if probe(middle) else (low, middle)
    result.best = low
    return result
