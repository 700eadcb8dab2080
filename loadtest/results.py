"""A merged run as a result: JSON (everything), CSV (one row per metric) and the numbers the
report and the SLO judgement read.

Latencies are ms; percentiles are of all samples of all workers (merged HDR histograms).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from typing import Any

from hdrh.histogram import HdrHistogram

from loadtest.merge import Merged, per_interval, timeline_rows

PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
# The generator is saturated when a worker's CPU use reaches this share of one core, or its
# pacing wake-ups are this late at p99: then the numbers describe the tool, not the target.
SATURATED_CPU = 0.9
SATURATED_LAG_MS = 10.0
# The messages the client's CPU is divided by: the streams' audio messages, STT chunks sent and
# TTS chunks received (a TTS request is answered by many chunks: divided by requests, the cost
# per message of a TTS run was that many times too high).
MESSAGE_COUNTERS = ("stt.chunks", "tts.chunks")


def session_errors(counters: Mapping[str, int]) -> tuple[int, int]:
    """(sessions that went wrong, sessions tried): a session refused at its start (OVERLOADED,
    RATE_LIMITED, ...) went wrong like one that failed or was cut, since its caller got no
    service. The result's ``error_rate`` and the SLO's error-rate check both read this, so the
    report and the verdict cannot disagree on it."""
    ok = counters.get("sessions.ok", 0)
    bad = sum(counters.get(k, 0) for k in ("sessions.failed", "sessions.cut", "sessions.refused"))
    return bad, ok + bad


def stats(h: HdrHistogram) -> dict[str, float]:
    out: dict[str, float] = {"count": h.get_total_count()}
    for p in PERCENTILES:
        out[f"p{p:g}"] = h.get_value_at_percentile(p) / 1000.0
    out["max"] = h.get_max_value() / 1000.0
    out["mean"] = h.get_mean_value() / 1000.0
    return out


def cdf_points(h: HdrHistogram, steps: int = 80, nines: float = 4.0) -> list[list[float]]:
    """[percentile, ms] pairs evenly spaced in "nines" (x = -log10(1 - p)), the HDR plot."""
    points = []
    for i in range(steps + 1):
        p = 100.0 * (1 - 10 ** (-nines * i / steps))
        points.append([round(p, 4), h.get_value_at_percentile(p) / 1000.0])
    points.append([100.0, h.get_max_value() / 1000.0])
    return points


def generator_health(merged: Merged) -> tuple[dict[str, Any], list[str]]:
    warnings = []
    workers = {}
    for index, cpu in merged.worker_cpu.items():
        lag = merged.worker_lag_ms.get(index, [])
        busy = cpu[1:-1] or cpu  # the first and last intervals are partial
        workers[str(index)] = {
            "cpu_mean": sum(busy) / len(busy) if busy else 0.0,
            "cpu_max": max(busy, default=0.0),
            "lag_p99_ms_max": max(lag, default=0.0),
        }
        saturated = sum(1 for c in busy if c >= SATURATED_CPU)
        if saturated >= 2:
            warnings.append(
                f"worker {index} used >= {SATURATED_CPU:.0%} of a core in "
                f"{saturated} intervals: the generator may be the bottleneck "
                "(add workers)"
            )
        late = sum(1 for v in lag if v >= SATURATED_LAG_MS)
        if late >= 2:
            warnings.append(
                f"worker {index}: pacing wake-ups up to {max(lag):.1f} ms late (p99) in {late} "
                "intervals: the generator, or the machine, is falling behind"
            )
    return workers, warnings


KINDS = ("stt", "tts")
SPANS = ("total", "first")  # spans over the stages, not stages: no share of their own


def stage_breakdown(merged: Merged, kind: str | None = None) -> dict[str, dict[str, float]]:
    """Per stage: its stats per stream (ms) and its share of the streams' summed stage time.
    ``kind``: the streams of that kind only (a mixed run records ``stage.<kind>.<name>``)."""
    prefix = f"{kind}." if kind else ""

    def name_of(key: str, head: str) -> str | None:
        name = key.removeprefix(head)
        if not key.startswith(head) or not name.startswith(prefix):
            return None
        name = name.removeprefix(prefix)
        return None if "." in name else name  # a per-kind key seen from the combined view

    stages = {n: h for k, h in merged.totals.items() if (n := name_of(k, "stage."))}
    spent = {n: v for k, v in merged.counters.items() if (n := name_of(k, "stage_us."))}
    busy = sum(v for n, v in spent.items() if n not in SPANS)
    out = {}
    for name, h in sorted(stages.items()):
        row = stats(h)
        if name not in SPANS:
            row["share"] = spent.get(name, 0) / busy if busy else 0.0
        out[name] = row
    return out


def stages_by_kind(merged: Merged) -> dict[str, dict[str, dict[str, float]]]:
    """A mixed run's breakdown per kind of stream (empty for a run of one kind)."""
    return {k: b for k in KINDS if (b := stage_breakdown(merged, k))}


def errors_by_kind(merged: Merged, mixed: bool) -> dict[str, dict[str, int]]:
    """A mixed run's errors per kind of session, both kinds always (empty for a run of one
    kind): which kind an ``OVERLOADED`` or a ``CUT`` hit."""
    if not mixed:
        return {}
    ranked = merged.counters.most_common()
    return {
        kind: {
            k.removeprefix(f"errors.{kind}."): n
            for k, n in ranked
            if k.startswith(f"errors.{kind}.")
        }
        for kind in KINDS
    }


def per_kind_stage(metric: str) -> bool:
    """``stage.stt.<name>`` or ``stage.tts.<name>``: shown in the stage breakdown per kind,
    not among the percentiles."""
    return any(metric.startswith(f"stage.{k}.") for k in KINDS)


def _concurrency_tail(scenario: dict[str, Any], timeline: list[dict[str, Any]]) -> list[str]:
    """A fixed-concurrency run whose slots stopped before its end says so: a slot starts no
    session that would run past the duration, so the slower the target (or the longer the
    sessions), the longer the run's tail ran under the concurrency asked (3 of 3 slots for 5
    s of a 10 s run, then 1), with nothing said."""
    arrivals = scenario.get("arrivals") or {}
    limits = scenario.get("limits") or {}
    asked, duration_s = arrivals.get("sessions", 0), limits.get("duration_s", 0.0)
    if arrivals.get("process") != "concurrency" or not asked or not timeline:
        return []
    held = [r["t"] for r in timeline if r.get("active", 0) >= asked]
    if not held:
        return []
    until = max(held)
    interval = timeline[1]["t"] - timeline[0]["t"] if len(timeline) > 1 else 1.0
    if until + 2 * interval >= duration_s:
        return []
    return [
        f"fixed concurrency held {asked} sessions at once only until {until:g} s of the "
        f"{duration_s:g} s run: a slot starts no session that would run past the end, so the "
        "rest ran under it (run longer than a few sessions, or make them shorter)"
    ]


def build(merged: Merged, scenario: dict[str, Any], extra: dict[str, Any] | None = None):
    """The result document (a JSON-able dict); a gateway API key in the scenario is
    redacted."""
    target = scenario.get("target")
    if isinstance(target, dict) and target.get("api_key"):
        scenario = {**scenario, "target": {**target, "api_key": "(redacted)"}}
    c = merged.counters
    counts = {k: c.get(k, 0) for k in MESSAGE_COUNTERS}
    messages, requests = sum(counts.values()), c.get("tts.requests", 0)
    sessions = c.get("sessions.ok", 0) + c.get("sessions.failed", 0) + c.get("sessions.cut", 0)
    bad, tried = session_errors(c)
    workers, warnings = generator_health(merged)
    words = c.get("wer.words", 0)
    metrics = {k: stats(h) for k, h in sorted(merged.totals.items())}
    warmup_s = (scenario.get("limits") or {}).get("warmup_s", 0.0)
    if c.get("sessions.started", 0) and "session.setup" not in metrics and warmup_s > 0:
        # Not recorded by definition (a session's start metrics count from its intended start,
        # and those in the warm-up are left out), but a run at fixed concurrency whose sessions
        # outlast it otherwise ends with no set-up time, no first result and no word why.
        warnings.append(
            f"every session began in the {warmup_s:g} s warm-up: session.setup"
            " and first-result latencies have no samples (set run.warmup_s = 0, or run"
            " longer than a session)"
        )
    timeline = timeline_rows(merged)
    warnings += _concurrency_tail(scenario, timeline)
    for metric in ("stt.message", "stt.final", "tts.first_audio", "session.setup"):
        for bucket, h in per_interval(merged, metric).items():
            row = next((r for r in timeline if round(r["t"] / merged.interval_s) == bucket), None)
            if row is not None:
                row[metric] = {
                    "p50": h.get_value_at_percentile(50) / 1000,
                    "p99": h.get_value_at_percentile(99) / 1000,
                    "count": h.get_total_count(),
                }
    return {
        "scenario": scenario,
        "run": {
            "start_epoch": merged.start_epoch,
            "elapsed_s": merged.elapsed_s,
            "workers": merged.workers,
            "interval_s": merged.interval_s,
        },
        "sessions": {
            "total": sessions,
            "ok": c.get("sessions.ok", 0),
            "failed": c.get("sessions.failed", 0),
            "cut": c.get("sessions.cut", 0),
            "refused": c.get("sessions.refused", 0),
            # Echo target only: chunks sent whose echo never came (their session ended first).
            "unanswered_chunks": c.get("stt.unanswered", 0),
            # Refused sessions included (session_errors): the SLO's error rate. None: no session.
            "error_rate": bad / tried if tried else None,
        },
        "errors": dict(merged.errors.most_common()),
        # One message per error key (the first seen): why, not only which.
        "error_examples": {k: merged.examples[k] for k in merged.errors if k in merged.examples},
        "errors_by_kind": errors_by_kind(merged, scenario.get("kind") == "mixed"),
        # StreamNotices by kind (FAILOVER, IDLE_WARNING, DRAINING, FORMAT_SUSPECT, ...): not
        # errors, but a run under faults is read by them.
        "notices": {
            k.removeprefix("notices."): n
            for k, n in merged.counters.most_common()
            if k.startswith("notices.")
        },
        "metrics": metrics,
        "stages": stage_breakdown(merged),
        "stages_by_kind": stages_by_kind(merged),
        "tts": {
            "contexts": c.get("tts.contexts", 0),
            "underruns": c.get("tts.underruns", 0),
            "underrun_ms": c.get("tts.underrun_us", 0) / 1000.0,
        },
        "wer": {
            "words": words,
            "edits": c.get("wer.edits", 0),
            "wer": c.get("wer.edits", 0) / words if words else None,
        },
        "generator": {
            "workers": workers,
            "cpu_s": merged.cpu_s,
            "messages": messages,
            "message_counts": counts,  # what cpu_us_per_message divides by
            "cpu_us_per_message": merged.cpu_s * 1e6 / messages if messages else None,
            # Per TTS request only in a run of TTS alone: a mixed run's CPU is one sum of both.
            "cpu_us_per_tts_request": (
                merged.cpu_s * 1e6 / requests if requests and not counts["stt.chunks"] else None
            ),
            "warnings": warnings,
        },
        "counters": dict(sorted(c.items())),
        "timeline": timeline,
        "cdf": {k: cdf_points(h) for k, h in merged.totals.items() if not k.startswith("stage.")},
        **(extra or {}),
    }


def to_csv(result: dict[str, Any]) -> str:
    """One row per metric: count and percentiles in ms."""
    columns = ["metric", "count", *(f"p{p:g}" for p in PERCENTILES), "max", "mean"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for name, row in result["metrics"].items():
        writer.writerow([name, *(_cell(row[c]) for c in columns[1:])])
    return out.getvalue()


def _cell(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return "" if math.isnan(value) else f"{value:.3f}"
