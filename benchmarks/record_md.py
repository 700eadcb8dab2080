"""BENCHMARKS.md's record section, generated from the record's JSON (never edited by hand).

    python -m benchmarks.record_md out/bench/record.json BENCHMARKS.md [SECTION]

The section sits between ``<!-- record:begin -->`` and ``<!-- record:end -->`` (``SECTION``
in place of ``record``: a run of some paths only, kept beside the full record); everything else
in the file is left as it is.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SECTION = "record"
DIFFS = [
    ("adapter", "Triton direct"),
    ("null proxy (floor)", "Triton direct"),
    ("adapter", "null proxy (floor)"),
    ("Triton direct", "echo (floor)"),
    ("tritonclient", "Triton direct"),
    ("gateway", "gateway null relay (floor)"),
    ("gateway null relay (floor)", "adapter"),
    ("gateway", "adapter"),
]
RELAY, GATEWAY = "gateway null relay (floor)", "gateway"
# Issue 7's goals for the gateway against its null relay (per message, at 1 and 100 streams).
GOAL_P50_MS, GOAL_P99_MS, GOAL_CPU_RATIO = 0.2, 0.5, 1.3
P999_MIN_SAMPLES = 10_000  # p99.9 is shown only when at least 10 samples lie above it


def _span(values: list[float], digits: int = 2) -> str:
    if not values:
        return ""
    lo, hi = values
    return (
        f"{lo:.{digits}f}"
        if round(lo, digits) == round(hi, digits)
        else f"{lo:.{digits}f}–{hi:.{digits}f}"
    )


def _table(kind: str, level: int, rows: list[dict[str, Any]], repeats: int) -> list[str]:
    what = "latency per 100 ms chunk" if kind == "stt" else "time to first audio"
    unit = "streams" if kind == "stt" else "concurrent"
    out = [
        f"#### {kind.upper()}, {level} {unit}: {what} (ms), {repeats} interleaved repeats",
        "",
        "| path | samples | p50 | p99 | p99.9 | max | p50 spread | p99 spread | "
        "client CPU µs/msg | server CPU µs/msg | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for row in rows:
        p = row["pooled"]
        p999 = f"{p['p99.9']:.2f}" if p["count"] >= P999_MIN_SAMPLES else "n/a"
        servers = ", ".join(f"{k} {_span(v, 0)}" for k, v in row["server_cpu_us"].items())
        errors = sum(sum(r["errors"].values()) for r in row["repeats"])
        out.append(
            f"| {row['path']} | {p['count']} | {p['p50']:.2f} | {p['p99']:.2f} | {p999} "
            f"| {p['max']:.2f} | {_span(row['spread']['p50'])} | "
            f"{_span(row['spread']['p99'])} | {_span(row['spread']['client_cpu_us'], 0)} "
            f"| {servers} | {errors} |"
        )
    by_path = {r["path"]: r["pooled"] for r in rows}
    for a, b in DIFFS:
        if a in by_path and b in by_path:
            x, y = by_path[a], by_path[b]
            out.append(
                f"| *{a} − {b}* | | **{x['p50'] - y['p50']:+.2f}** | "
                f"**{x['p99'] - y['p99']:+.2f}** | | | | | | | |"
            )
    return [*out, ""]


def _goals(rows: list[dict[str, Any]]) -> list[str]:
    """The CPU goal: the adapter-style Triton client against tritonclient's, at most STT."""
    stt = [r for r in rows if r["kind"] == "stt"]
    if not stt:
        return []
    level = max(r["level"] for r in stt)
    at = {r["path"]: r for r in stt if r["level"] == level}
    if "Triton direct" not in at or "tritonclient" not in at:
        return []
    ours, theirs = at["Triton direct"], at["tritonclient"]
    a, b = ours["spread"]["client_cpu_us"], theirs["spread"]["client_cpu_us"]
    ratio = [b[0] / a[1], b[1] / a[0]] if a[0] > 0 else []
    return [
        f"**Client CPU per message at {level} streams** (one client process each): raw stubs "
        f"on grpc.aio (the adapter's kind of Triton client) {_span(a, 0)} µs against "
        f"tritonclient's stream client {_span(b, 0)} µs, {_span(ratio, 1)}× "
        f"(goal: at least 3×). Pooled p99: {ours['pooled']['p99']:.2f} against "
        f"{theirs['pooled']['p99']:.2f} ms.",
        "",
    ]


def _per_repeat(a: dict[str, Any], b: dict[str, Any], value: Any) -> list[float]:
    """``value(run of a) - value(run of b)`` (or a ratio) for each repeat both ran."""
    return [value(x, y) for x, y in zip(a["repeats"], b["repeats"], strict=False)]


def _server(run: dict[str, Any], name: str) -> float:
    return float(run["server_cpu_us"].get(name, 0.0))


def _holds(ok: bool) -> str:
    return "holds" if ok else "**missed**"


def _gateway_goals(rows: list[dict[str, Any]]) -> list[str]:
    """Issue 7: gateway − null relay per message (p50, p99) and the CPU ratio, per level; and
    gateway + adapter against the adapter direct."""
    out: list[str] = []
    for level in sorted({r["level"] for r in rows if r["kind"] == "stt"}):
        at = {r["path"]: r for r in rows if r["kind"] == "stt" and r["level"] == level}
        if GATEWAY not in at or RELAY not in at:
            continue
        gw, relay = at[GATEWAY], at[RELAY]
        d50 = gw["pooled"]["p50"] - relay["pooled"]["p50"]
        d99 = gw["pooled"]["p99"] - relay["pooled"]["p99"]
        r50 = _per_repeat(gw, relay, lambda x, y: x["p50"] - y["p50"])
        r99 = _per_repeat(gw, relay, lambda x, y: x["p99"] - y["p99"])
        g_cpu = [_server(r, "gateway") for r in gw["repeats"]]
        n_cpu = [_server(r, "null relay") for r in relay["repeats"]]
        ratios = [g / n for g, n in zip(g_cpu, n_cpu, strict=False) if n > 0]
        ratio = sum(g_cpu) / max(sum(n_cpu), 1e-9)
        out.append(
            f"**Gateway against its null relay, STT {level} stream{'s' if level > 1 else ''}** "
            f"({gw['pooled']['count']} and {relay['pooled']['count']} samples): "
            f"p50 {d50:+.2f} ms (repeats {_span(_bounds(r50))}; goal ≤ {GOAL_P50_MS} ms: "
            f"{_holds(d50 <= GOAL_P50_MS)}), p99 {d99:+.2f} ms (repeats {_span(_bounds(r99))}; "
            f"goal ≤ {GOAL_P99_MS} ms: {_holds(d99 <= GOAL_P99_MS)}); CPU per message: gateway "
            f"{_span(_bounds(g_cpu), 0)} µs, null relay {_span(_bounds(n_cpu), 0)} µs, "
            f"{ratio:.2f}× over all repeats (per repeat {_span(_bounds(ratios))}; goal ≤ "
            f"{GOAL_CPU_RATIO}×: {_holds(ratio <= GOAL_CPU_RATIO)})."
        )
        out.append("")
    for kind in ("stt", "tts"):
        for level in sorted({r["level"] for r in rows if r["kind"] == kind}):
            at = {r["path"]: r for r in rows if r["kind"] == kind and r["level"] == level}
            if GATEWAY not in at or "adapter" not in at:
                continue
            gw, direct = at[GATEWAY], at["adapter"]
            both = [_server(r, "gateway") + _server(r, "adapter") for r in gw["repeats"]]
            alone = [_server(r, "adapter") for r in direct["repeats"]]
            what = "per message" if kind == "stt" else "time to first audio"
            out.append(
                f"*Gateway + adapter against the adapter direct, {kind.upper()} {level}:* "
                f"{what} p50 {gw['pooled']['p50']:.2f} against {direct['pooled']['p50']:.2f} ms, "
                f"p99 {gw['pooled']['p99']:.2f} against {direct['pooled']['p99']:.2f} ms; server "
                f"CPU per message (gateway + adapter, against the adapter) "
                f"{_span(_bounds(both), 0)} against {_span(_bounds(alone), 0)} µs."
            )
            out.append("")
    return out


def _bounds(values: list[float]) -> list[float]:
    return [min(values), max(values)] if values else []


def _markers(section: str) -> tuple[str, str]:
    return f"<!-- {section}:begin -->", f"<!-- {section}:end -->"


def render(result: dict[str, Any], section: str = SECTION) -> str:
    h = result["header"]
    begin, end = _markers(section)
    out = [
        begin,
        "",
        "### Result (generated by `make bench` from its JSON)",
        "",
        f"- {h['date']}, commit {h['commit']}, grpcio {h['grpcio']}, Python {h['python']}, "
        f"{h['machine']}, nproc {h['nproc']}",
        f"- `{h['command']}`: {h['seconds']:g} s per run, {h['repeats']} repeats, the first "
        "second of each run not counted; load average before "
        f"{h['load_average_before'][0]:.2f}, after {h['load_average_after'][0]:.2f}",
        "- samples: pooled over the repeats; spread: min–max of the repeats' own values; "
        f"p99.9 only from {P999_MIN_SAMPLES} samples",
        "",
    ]
    repeats = h["repeats"]
    keys = sorted(
        {(r["kind"], r["level"]) for r in result["rows"]}, key=lambda k: (k[0] != "stt", k[1])
    )
    for kind, level in keys:
        rows = [r for r in result["rows"] if (r["kind"], r["level"]) == (kind, level)]
        out += _table(kind, level, rows, repeats)
    out += _goals(result["rows"])
    out += _gateway_goals(result["rows"])
    return "\n".join([*out, end])


def write_section(result: dict[str, Any], path: Path, section: str = SECTION) -> None:
    """Replace the section named ``section`` of ``path`` (or append one)."""
    text = path.read_text() if path.exists() else ""
    begin, end = _markers(section)
    rendered = render(result, section)
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + rendered + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + rendered + "\n"
    path.write_text(text)


if __name__ == "__main__":
    write_section(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]), *sys.argv[3:4])
