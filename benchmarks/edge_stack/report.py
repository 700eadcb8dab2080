"""The markdown tables of the edge stack benchmark (BENCHMARKS.md, "Edge stack choice")."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.edge_stack.latency import Measured
from benchmarks.stack import Stats

DIRECT = "direct gRPC (floor)"


def _f(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _pooled(runs: Sequence[Measured]) -> Stats:
    errors = [e for m in runs for e in m.stats.errors]
    return Stats.of([x for m in runs for x in m.ms], sum(m.stats.lost for m in runs), errors)


def _spread(values: list[float]) -> str:
    """min / median / max: on a shared machine the best round is the least disturbed."""
    if not values:
        return ""
    return f"{_f(min(values))} / {_f(float(np.median(values)))} / {_f(max(values))}"


def latency_table(streams: int, rows: dict[str, list[Measured]], stacks: list[str]) -> str:
    """Pooled percentiles over all rounds, the spread of per-round p50 and p99, and the
    relay's own cost (relay − echo on the same stack) and relay − the gRPC floor."""
    title = f"#### {streams} paced stream{'s' * (streams > 1)}: latency per message (ms)"
    lines = [
        title,
        "",
        "| path | rounds | count | p50 | p90 | p99 | max | p50 per round (min / median / max) "
        "| p99 per round (min / median / max) "
        "| lost / errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    pooled = {label: _pooled(runs) for label, runs in rows.items()}
    for label, runs in rows.items():
        s = pooled[label]
        cells = [len(runs), s.count, _f(s.p50), _f(s.p90), _f(s.p99), _f(s.max)]
        cells += [_spread([m.stats.p50 for m in runs]), _spread([m.stats.p99 for m in runs])]
        cells.append(f"{s.lost} / {len(s.errors)}")
        lines.append(f"| {label} | " + " | ".join(map(str, cells)) + " |")
    for stack in stacks:
        relay, echo = pooled.get(f"{stack} relay"), pooled.get(f"{stack} echo")
        if relay is None or echo is None:
            continue
        for other, name in ((echo, f"{stack} echo"), (pooled.get(DIRECT), DIRECT)):
            if other is None:
                continue
            d = [relay.p50 - other.p50, relay.p90 - other.p90, relay.p99 - other.p99]
            lines.append(
                f"| *{stack} relay − {name}* | | | **{d[0]:+.2f}** | {d[1]:+.2f} | "
                f"**{d[2]:+.2f}** | | | | |"
            )
    errors = [e for s in pooled.values() for e in s.errors]
    if errors:
        lines += ["", f"{len(errors)} errors; first: `{errors[0][:300]}`"]
    return "\n".join(lines) + "\n"


def cpu_table(levels: dict[int, dict[str, list[Measured]]]) -> str:
    """CPU µs per message, pooled over rounds (weighted by messages), with the per-round
    spread of the stack's figure."""
    lines = [
        "#### CPU time per message (µs; utime + stime over the measured phases, all rounds)",
        "",
        "| path | streams | messages | stack server | per round | gRPC echo | client | "
        "machine busy | other load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for streams, rows in levels.items():
        for label, runs in rows.items():
            n = sum(m.messages for m in runs)

            def pooled(key: str, runs: list[Measured] = runs, n: int = n) -> str:
                if not all(key in m.cpu_us for m in runs):
                    return ""
                return f"{sum(m.cpu_us[key] * m.messages for m in runs) / max(n, 1):.0f}"

            per_round = [m.cpu_us["stack"] for m in runs if "stack" in m.cpu_us]
            spread = f"{min(per_round):.0f}–{max(per_round):.0f}" if per_round else ""
            busy = np.mean([m.cpu_us["_busy"] for m in runs])
            other = np.mean([m.cpu_us["_other"] for m in runs])
            cells = [streams, n, pooled("stack"), spread, pooled("gRPC echo"), pooled("client")]
            cells += [f"{busy:.0f} %", f"{other:.0f} %"]
            lines.append(f"| {label} | " + " | ".join(map(str, cells)) + " |")
    lines.append(
        "\nMachine busy and other load (busy time outside the processes measured: other jobs) "
        "are % of all cores, averaged over rounds. /proc counts CPU in 10 ms ticks and a round "
        "at 1 stream has only 10 messages per measured second: read that level pooled."
    )
    return "\n".join(lines) + "\n"


def idle_table(idle: dict[str, dict[str, Any]], with_grpc: dict[str, dict[str, Any]]) -> str:
    counts = sorted({s["connections"] for r in idle.values() for s in r.get("steps", [])})
    head = " | ".join(f"RSS / conn at {c:,}" for c in counts)
    lines = [
        "#### Server memory per idle authenticated WebSocket (KiB; (after − before) / connections)",
        "",
        f"| stack | RSS before (MiB) | {head} | USS / conn at {counts[-1]:,} | "
        f"RSS / conn at {_grpc_count(with_grpc)} with a gRPC stream | open {counts[-1]:,} (s) |",
        "|---|---:|" + "---:|" * (len(counts) + 3),
    ]
    notes = [f"- {stack}: {r['error']}" for stack, r in idle.items() if "error" in r]
    for stack, result in idle.items():
        if "base" not in result:
            continue
        steps = {s["connections"]: s for s in result["steps"]}
        cells = [f"{result['base']['rss'] / 1024:.0f}"]
        cells += [_f(steps[c]["per_conn_kib"]["rss"], 1) if c in steps else "" for c in counts]
        last = steps.get(counts[-1])
        cells.append(_f(last["per_conn_kib"]["uss"], 1) if last else "")
        g = with_grpc.get(stack, {}).get("steps")
        cells.append(_f(g[-1]["per_conn_kib"]["rss"], 1) if g else "")
        cells.append(_f(last["open_s"], 1) if last else "")
        lines.append(f"| {stack} | " + " | ".join(cells) + " |")
    if notes:
        lines += ["", "Not completed:", *notes]
    return "\n".join(lines) + "\n"


def _grpc_count(with_grpc: dict[str, dict[str, Any]]) -> str:
    for result in with_grpc.values():
        if result.get("steps"):
            return f"{result['steps'][-1]['connections']:,}"
    return "-"


def heartbeat_table(idle: dict[str, dict[str, Any]], heartbeat: float) -> str:
    lines = [
        f"#### Heartbeat: server pings every {heartbeat:g} s, pong due within {heartbeat / 2:g} s",
        "",
        "| stack | connections | held (s) | pings answered | pings / conn (min) | "
        "ping interval p50 / p99 / max (s) | closed by server | open at end | "
        "server CPU | server µs / ping | client CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for stack, result in idle.items():
        h = result.get("heartbeat")
        if not h:
            continue
        gaps = f"{_f(h['gap_p50_s'])} / {_f(h['gap_p99_s'])} / {_f(h['gap_max_s'])}"
        cells = [
            f"{h['connections']:,}",
            f"{h['held_s']:.0f}",
            f"{h['pings']:,}",
            h["pings_min"],
            gaps,
            h["closed_by_server"],
            f"{h['open_at_end']:,}",
            f"{h['server_cpu_pct']:.0f} %",
            f"{h['server_us_per_ping']:.0f}",
            f"{h['client_cpu_pct']:.0f} %",
        ]
        lines.append(f"| {stack} | " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.1f}"


def backpressure_table(checks: dict[str, dict[str, Any]]) -> str:
    lines = [
        "#### Backpressure: a peer that stops reading (WebSocket out) or a handler that does "
        "not read (WebSocket in, HTTP upload)",
        "",
        "| stack | WS out: send() accepted at 5 s / 10 s (MiB) | longest send() wait (s) | "
        "server RSS growth (KiB) | after the peer left | WS in: peer pushed in 4 s (MiB) | "
        "RSS growth (KiB) | upload: peer pushed in 4 s (MiB) | RSS growth (KiB) |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for stack, c in checks.items():
        f, s, u = c["flood"], c["sink"], c["slow_upload"]
        cells = [
            f"{_mib(f['accepted_1'])} / {_mib(f['accepted_2'])}",
            f"{f['longest_send_s']:.1f}",
            f"{f['rss_growth_kib_2']:,}",
            f["ended"] or "still sending",
            _mib(s["pushed"]),
            f"{s['rss_growth_kib']:,}",
            _mib(u["pushed"]),
            f"{u['rss_growth_kib']:,}",
        ]
        lines.append(f"| {stack} | " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def http_table(checks: dict[str, dict[str, Any]]) -> str:
    lines = [
        "#### HTTP: chunked upload read as it arrives; SSE out to a peer that stalls",
        "",
        "| stack | handler saw the 1st of 100 chunks after (ms) | body read (bytes, reads, "
        "largest read) | SSE: accepted while stalled, 1.5 s / 3 s (MiB) | RSS growth (KiB) | "
        "events received / produced | content type |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for stack, c in checks.items():
        u, e = c["upload"], c["events"]
        seen = _f(u["first_chunk_seen_ms"], 1) if u["first_chunk_seen_ms"] else "not seen"
        read = f"{u['bytes']:,} of {u['expected']:,}, {u['reads']}, {u['largest_read']:,}"
        cells = [
            seen,
            read,
            f"{_mib(e['accepted_1'])} / {_mib(e['accepted_2'])}",
            f"{e['rss_growth_kib']:,}",
            f"{e['events']:,} / {e['events_produced']:,}",
            e["content_type"],
        ]
        lines.append(f"| {stack} | " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def render(path: str) -> str:
    """The tables of a run saved with ``--json``, without measuring again."""
    raw = json.loads(Path(path).read_text())
    out = ["### Edge stack benchmark", "", *raw["header"]]
    if "latency" in raw:
        levels = {
            int(n): {label: [measured_of(m) for m in runs] for label, runs in rows.items()}
            for n, rows in raw["latency"].items()
        }
        stacks = [
            label[: -len(" relay")] for label in levels[min(levels)] if label.endswith(" relay")
        ]
        out += [latency_table(n, rows, stacks) for n, rows in levels.items()]
        out.append(cpu_table(levels))
    if "idle" in raw:
        heartbeat = raw.get("heartbeat", 10.0)
        out += [idle_table(raw["idle"], raw["idle_with_grpc"])]
        out += [heartbeat_table(raw["idle"], heartbeat)]
    if "checks" in raw:
        out += [backpressure_table(raw["checks"]), http_table(raw["checks"])]
    return "\n".join(out)


def measured_of(saved: dict[str, Any]) -> Measured:
    return Measured(Stats(**saved["stats"]), saved["ms"], saved["messages"], saved["cpu_us"])
