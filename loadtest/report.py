"""The HTML report: one self-contained file (inline CSS and SVG, no script, no network) that
opens from file:// offline. Sections: summary and errors, percentiles, latency over time,
CDFs, stage breakdown, concurrency against latency, generator health, SLO verdict and search.
"""

from __future__ import annotations

import datetime
import html
from typing import Any

from loadtest import slo
from loadtest.results import per_kind_stage
from loadtest.svg import bar_chart, line_chart

_CSS = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.warn{color:#b00}.ok{color:#070}.fail{color:#b00}svg{display:block;margin:8px 0 20px}
h2{border-bottom:1px solid #ddd;padding-bottom:4px}"""
LATENCY_METRICS = (
    "stt.message",
    "stt.first_result",
    "stt.final",
    "tts.first_audio",
    "session.setup",
)


def _table(header: list[str] | None, rows: list[list[Any]]) -> str:
    """``header`` None: a table of name and value rows, with no header row."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header or ())
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{f'<tr>{head}</tr>' if head else ''}{body}</table>"


def _cell(value: Any) -> str:
    # The JSON's null and booleans as a reader reads them, not Python's None, True and False.
    if value is None:
        return "&ndash;"
    if isinstance(value, bool):
        return '<span class="ok">yes</span>' if value else '<span class="fail">no</span>'
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
    return html.escape(str(value))


def _summary(result: dict[str, Any]) -> str:
    s, sc = result["sessions"], result["scenario"]
    run = result["run"]
    when = datetime.datetime.fromtimestamp(run["start_epoch"], datetime.UTC).isoformat(
        timespec="seconds"
    )
    target = sc.get("target", {})
    rows = [
        ["scenario", sc.get("name", "")],
        ["target", f"{target.get('kind')} {target.get('address')}"],
        ["started (UTC)", when],
        ["workers", run["workers"]],
        [
            "sessions ok / failed / cut / refused",
            f"{s['ok']} / {s['failed']} / {s['cut']} / {s['refused']}",
        ],
        ["error rate", "-" if s["error_rate"] is None else f"{s['error_rate']:.3%}"],
    ]
    if result["wer"]["wer"] is not None:
        rows.append(["WER", f"{result['wer']['wer']:.3f} ({result['wer']['words']} words)"])
    if result["tts"]["contexts"]:
        t = result["tts"]
        rows.append(
            [
                "TTS underruns",
                f"{t['underruns']} in {t['contexts']} contexts, {t['underrun_ms']:.1f} ms in total",
            ]
        )
    notices = result.get("notices") or {}
    rows.append(["notices", ", ".join(f"{k} {n}" for k, n in notices.items()) or None])
    out = "<h2>Summary</h2>" + _table(None, rows)
    if result["errors"]:
        # A mixed run: a column per kind of session, which kind each error hit.
        kinds = result.get("errors_by_kind") or {}
        examples = result.get("error_examples") or {}
        out += "<h3>Errors by status and reason</h3>" + _table(
            ["status/reason", "count", *(k.upper() for k in kinds), "the first one said"],
            [
                [k, v, *(kinds[kind].get(k, 0) for kind in kinds), examples.get(k)]
                for k, v in result["errors"].items()
            ],
        )
    for warning in result["generator"]["warnings"]:
        out += f'<p class="warn">{html.escape(warning)}</p>'
    return out


def _percentiles(result: dict[str, Any]) -> str:
    metrics = result["metrics"]
    cols = ["count", "p50", "p90", "p95", "p99", "p99.9", "max", "mean"]
    rows = [
        [name, *(m[c] for c in cols)] for name, m in metrics.items() if not per_kind_stage(name)
    ]
    return "<h2>Percentiles (ms)</h2>" + _table(["metric", *cols], rows)


def _over_time(result: dict[str, Any]) -> str:
    out = ["<h2>Latency over time</h2>"]
    for metric in LATENCY_METRICS:
        rows = [(r["t"], r[metric]) for r in result["timeline"] if metric in r]
        if rows:
            series = [
                (f"{metric} p50", [(t, m["p50"]) for t, m in rows]),
                (f"{metric} p99", [(t, m["p99"]) for t, m in rows]),
            ]
            out.append(line_chart(f"{metric} per interval", series, "seconds", "ms"))
    active = [(r["t"], float(r.get("active", 0))) for r in result["timeline"]]
    if active:
        out.append(line_chart("active sessions", [("active", active)], "seconds", "sessions"))
    return "".join(out)


def _cdfs(result: dict[str, Any]) -> str:
    series = [
        (name, [(p, v) for p, v in points])
        for name, points in result["cdf"].items()
        if name in LATENCY_METRICS or name.startswith("tts.")
    ]
    if not series:
        return ""
    return "<h2>Latency distribution</h2>" + line_chart(
        "latency by percentile", series, "percentile", "ms", nines_x=True
    )


def _stages(result: dict[str, Any]) -> str:
    head = "<h2>Stage breakdown (per stream, from voxwire-timings-bin)</h2>"
    note = (
        "<p>first and total are spans over the stages (to the first response; the whole"
        " stream), not stages: no share.</p>"
    )
    if not result["stages"]:
        return head + "<p>The target reports no stage timings.</p>"
    by_kind = result.get("stages_by_kind") or {}
    if not by_kind:
        return head + _stage_section("", result["stages"]) + note
    # A mixed run: STT and TTS streams apart (their merged breakdown describes neither).
    return (
        head
        + "".join(
            _stage_section(f"<h3>{kind.upper()} streams</h3>", stages, f" ({kind.upper()})")
            for kind, stages in by_kind.items()
        )
        + note
    )


def _stage_section(title: str, stages: dict[str, Any], suffix: str = "") -> str:
    parts = [(k, v["mean"]) for k, v in stages.items() if "share" in v]
    rows = [
        [
            k,
            v["count"],
            v["p50"],
            v["p99"],
            v["mean"],
            f"{v['share']:.1%}" if "share" in v else None,
        ]
        for k, v in stages.items()
    ]
    return (
        title
        + bar_chart(f"mean time per stream by stage{suffix}", parts, "ms")
        + _table(["stage", "streams", "p50", "p99", "mean", "share"], rows)
    )


def _concurrency(result: dict[str, Any]) -> str:
    for metric in ("stt.message", "tts.first_audio", "stt.final"):
        pts = sorted(
            (float(r.get("active", 0)), r[metric]["p99"]) for r in result["timeline"] if metric in r
        )
        if len(pts) >= 2:
            chart = line_chart(
                f"{metric} p99 against active sessions",
                [(f"{metric} p99", pts)],
                "active sessions",
                "ms",
                lines=False,
            )
            return "<h2>Concurrency against latency</h2>" + chart
    return ""


def _generator(result: dict[str, Any]) -> str:
    g = result["generator"]
    rows = [
        [k, f"{v['cpu_mean']:.0%}", f"{v['cpu_max']:.0%}", v["lag_p99_ms_max"]]
        for k, v in g["workers"].items()
    ]
    per, counts = g["cpu_us_per_message"], g.get("message_counts", {})
    note = ""
    if per:
        parts = [
            f"{counts[k]} {label}"
            for k, label in (
                ("stt.chunks", "STT audio chunks sent"),
                ("tts.chunks", "TTS audio chunks received"),
            )
            if counts.get(k)
        ]
        over = f": {' + '.join(parts)}" if parts else ""
        note = (
            f"<p>Client CPU per message: {per:.0f} µs ({g['cpu_s']:.2f} s of CPU over "
            f"{g['messages']} messages{over})."
        )
        if g.get("cpu_us_per_tts_request"):
            note += f" Client CPU per TTS request: {g['cpu_us_per_tts_request']:.0f} µs."
        note += "</p>"
    return (
        "<h2>Generator</h2>"
        + note
        + _table(["worker", "CPU mean", "CPU max", "pacing lag p99 max (ms)"], rows)
    )


def _slo(result: dict[str, Any]) -> str:
    out = ""
    verdict = result.get("slo")
    search = result.get("search")
    if verdict:
        said = slo.state_of(verdict)
        state = "ok" if verdict["passed"] else "fail"
        # A search's figures are one level's: the best that held, or the lowest probed.
        at = (
            f" at {search['over']} {search['figures_at']}"
            if search and "figures_at" in search
            else ""
        )
        out += (
            f'<h2>SLO verdict{html.escape(at)}: <span class="{state}">'
            f"{said}</span> "
            f"(confidence {verdict['confidence']:.0%})</h2>"
        )
        out += _table(
            ["check", "passed", "observed", "upper bound", "limit", "samples", "note"],
            [
                [
                    c["name"],
                    c["passed"],
                    # As the name states them: the error rate's in %, not a bare fraction.
                    *(slo.figure(c["name"], c[k]) for k in ("observed", "bound", "limit")),
                    c["samples"],
                    c["note"],
                ]
                for c in verdict["checks"]
            ],
        )
    if search:
        path = search["path"]
        trail = [(i + 1.0, p["level"]) for i, p in enumerate(path)]
        series = [("probe", trail)] + [
            (said, [(i + 1.0, p["level"]) for i, p in enumerate(path) if slo.state_of(p) == said])
            for said in ("held", "missed", "inconclusive")
        ]
        lowest = min(path, key=lambda p: p["level"]) if path else None
        found = (
            f"best {search['best']}"
            if search["best"] is not None
            else f'<span class="fail">no level held</span> (the lowest, '
            f"{search.get('figures_at', 'none')}, "
            f"{slo.state_of(lowest) if lowest else 'missed'})"
        )
        out += f"<h2>SLO search over {html.escape(search['over'])}: {found}</h2>"
        out += line_chart("search path", series, "probe", search["over"], markers=True)
        # How many runs each level took: more than the repeats where samples were short.
        out += _table(
            [search["over"], "verdict", "runs"],
            [[p["level"], slo.state_of(p), p.get("runs", "")] for p in path],
        )
    return out


def render(result: dict[str, Any]) -> str:
    """The whole report as one HTML document."""
    name = html.escape(str(result["scenario"].get("name", "load test")))
    body = "".join(
        [
            _summary(result),
            _slo(result),
            _percentiles(result),
            _over_time(result),
            _cdfs(result),
            _stages(result),
            _concurrency(result),
            _generator(result),
        ]
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>voxwire load test: {name}</title><style>{_CSS}</style></head>"
        f"<body><h1>voxwire load test: {name}</h1>{body}</body></html>"
    )
