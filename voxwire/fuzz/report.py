"""The fuzz run's figures: verdict counts, statuses, the invariants, leaks, examples.

The invariants (issue 8): 0 crashes, 0 streams without a status, every non-OK status with its
reason (and its retryable flag), every server status with the timing trailers (docs/contract.md,
Timings), the families with one right reason refused with it, 0 valid streams disturbed, and
afterwards nothing leaked (the adapter's open streams and tasks back at their baseline, no
request pending in Triton, every sequence slot free), memory back near its start, and no
"Task was destroyed" / "never retrieved" / traceback in the log. An invariant whose reading is
not available (no metrics endpoint given) is skipped, and said so.
"""

from __future__ import annotations

import json
import shlex
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from voxwire.fuzz import probes
from voxwire.fuzz.cases import Case, Plan, make_case
from voxwire.fuzz.client import Outcome

if TYPE_CHECKING:
    from voxwire.fuzz.runner import Options

VERDICTS = (
    "ok",
    "rejected",
    "client_ended",
    "core_36066",
    "grpc_limit",
    "no_reason",
    "no_status",
    "crash",
    "disturbed",
)
_BAD = ("no_reason", "no_status", "crash", "disturbed")
# Families whose every stream must be refused with one reason (docs/contract.md, Errors):
# NaN/infinite samples are INVALID_AUDIO, a request that does not parse is INVALID_MESSAGE.
EXPECTED_REASON = {"nan_audio": "INVALID_AUDIO", "bad_utf8": "INVALID_MESSAGE"}
# Reasons that say the server could not take the stream at all: no verdict on the input then.
_CAPACITY = {"BACKEND_UNAVAILABLE", "OVERLOADED", "DRAINING"}
# Statuses the client library made up, not the server (so they carry no server trailers).
# (grpc_limit: gRPC core's own refusal of an oversized message, never seen by the server.)
_CLIENT_SIDE = ("client_ended", "core_36066", "grpc_limit", "no_status")


@dataclass
class Readings:
    at: float = 0.0
    streams: float | None = None
    tasks: float | None = None
    # Tasks by what they run (voxwire_asyncio_tasks_by_kind), so that a leak names itself.
    task_kinds: dict[str, float] | None = None
    rss: int | None = None
    peak_rss: int | None = None
    triton_pending: dict[str, float] | None = None
    # The adapter's Triton calls so far, by how each ended (voxwire.triton.calls), and its
    # cancels by reason (voxwire.triton.cancels): cancels are what Triton 2.51 dies of.
    triton_calls: dict[str, float] | None = None
    triton_cancels: dict[str, float] | None = None
    log_size: int | None = None
    triton_ready: bool | None = None


@dataclass
class Invariant:
    name: str
    value: str
    ok: bool | None  # None: not measured


@dataclass
class Report:
    meta: dict[str, Any]
    verdicts: dict[str, int]
    by_family: dict[str, dict[str, int]]
    statuses: dict[str, int]
    invariants: list[Invariant]
    examples: dict[str, dict[str, Any]] = field(default_factory=dict)
    leaks: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(inv.ok is not False for inv in self.invariants)

    @classmethod
    def build(
        cls,
        opts: Options,
        plan: Plan,
        outcomes: list[Outcome],
        before: Readings | None,
        after: Readings | None,
        slots: list[probes.SlotProbe],
        elapsed_s: float,
    ) -> Report:
        verdicts = Counter(o.verdict for o in outcomes)
        by_family: dict[str, Counter[str]] = {}
        statuses: Counter[str] = Counter()
        for o in outcomes:
            by_family.setdefault(o.family, Counter())[o.verdict] += 1
            if o.got_status:
                statuses[f"{o.code} {o.reason or '-'}"] += 1
        report = cls(
            meta={
                "target": opts.target,
                "cases": len(outcomes),
                "concurrency": opts.concurrency,
                "seed": opts.seed,
                "seconds": round(elapsed_s, 1),
                "cases_per_s": round(len(outcomes) / elapsed_s, 1) if elapsed_s else None,
                "stt_models": list(plan.stt_models),
                "tts_models": list(plan.tts_models),
                # Fitted to the STT models' capabilities (None: every model does it).
                "stt_interim_models": sorted(
                    plan.stt_models if plan.interim_models is None else plan.interim_models
                ),
                "stt_f32_models": list(
                    plan.stt_models if plan.f32_models is None else plan.f32_models
                ),
                "valid_streams": sum(o.valid for o in outcomes),
                "writes_failed": sum(o.write_failed for o in outcomes),
                "triton_down_after_cases": opts.triton_down_at[0] if opts.triton_down_at else None,
            },
            verdicts={v: verdicts.get(v, 0) for v in VERDICTS},
            by_family={f: dict(c) for f, c in sorted(by_family.items())},
            statuses=dict(statuses.most_common()),
            invariants=[],
        )
        wrong = [
            o
            for o in outcomes
            if o.family in EXPECTED_REASON
            and o.verdict not in ("core_36066", "client_ended")
            and o.reason not in _CAPACITY
            and o.reason != EXPECTED_REASON[o.family]
        ]
        report.meta["wrong_reason"] = dict(
            Counter(f"{o.family}: {o.reason or o.code}" for o in wrong)
        )
        report.examples = _examples(opts, plan, outcomes, {o.index for o in wrong})
        report.invariants = _invariants(report, outcomes, opts, before, after, slots)
        return report

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False)

    def render(self) -> None:
        """Print the summary tables (rich)."""
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        console = Console(stderr=False)
        m = self.meta
        console.print(
            f"[bold]voxwire fuzz[/] {m['cases']} cases against {m['target']}, "
            f"{m['concurrency']} at a time, seed {m['seed']}, {m['seconds']} s "
            f"({m['cases_per_s']}/s); {m['valid_streams']} valid streams"
        )
        stt = set(m["stt_models"])
        if unlike := sorted(stt - set(m.get("stt_interim_models", stt))):
            console.print(f"no interim results asked of {', '.join(unlike)} (it makes none)")
        if stt and not m.get("stt_f32_models", stt):
            console.print("nan_audio left out: no STT model takes pcm_f32le")
        families = Table(title="verdicts per family")
        families.add_column("family")
        for v in VERDICTS:
            families.add_column(v, justify="right")
        for family, counts in self.by_family.items():
            families.add_row(escape(family), *(str(counts.get(v, 0) or "") for v in VERDICTS))
        families.add_row("[bold]all", *(f"[bold]{self.verdicts[v]}" for v in VERDICTS))
        console.print(families)
        status = Table(title="statuses (code reason)")
        status.add_column("status")
        status.add_column("streams", justify="right")
        for key, n in self.statuses.items():
            status.add_row(escape(key), str(n))
        console.print(status)
        inv = Table(title="invariants")
        for col in ("invariant", "value", "holds"):
            inv.add_column(col)
        for i in self.invariants:
            mark = {True: "[green]yes", False: "[red]NO", None: "[yellow]not measured"}[i.ok]
            # Values quote what the servers said (task names such as
            # "[/grpc.health.v1.Health/Watch]", reasons): text, never rich markup.
            inv.add_row(escape(i.name), escape(i.value), mark)
        console.print(inv)
        for name, ex in self.examples.items():
            console.print(
                f"[bold]{escape(name)}[/]: "
                + escape(
                    f"case {ex['case']} ({ex['family']}, {ex['detail']}) "
                    f"-> {ex['status']}; reproduce: {ex['reproduce']}"
                )
            )


def _examples(
    opts: Options, plan: Plan, outcomes: list[Outcome], wrong: set[int]
) -> dict[str, dict[str, Any]]:
    """The smallest case (fewest messages, then fewest bytes) of each bad verdict, each wrong
    reason and each crash / no-reason status, with the command that reproduces it alone."""
    best: dict[str, tuple[tuple[int, int], Case, Outcome]] = {}
    for o in outcomes:
        if o.index in wrong:
            key = f"wrong reason: {o.family} {o.code} {o.reason or '-'}"
        elif o.verdict in (*_BAD, "core_36066"):
            key = f"{o.verdict}: {o.service} {o.code} {o.reason or '-'}"
        else:
            continue
        case = make_case(opts.seed, o.index, plan)
        rank = (len(case.messages), case.size)
        if key not in best or rank < best[key][0]:
            best[key] = (rank, case, o)
    out: dict[str, dict[str, Any]] = {}
    for key, (_, case, o) in sorted(best.items()):
        out[key] = {
            "case": case.index,
            "family": case.family,
            "service": case.service,
            "detail": case.detail or ("valid stream" if case.valid else ""),
            "messages": [m[:48].hex() + ("..." if len(m) > 48 else "") for m in case.messages[:6]],
            "message_count": len(case.messages),
            "status": f"{o.code} {o.reason or '(no reason)'} {o.details[:120]!r}",
            "violations": o.violations[:5],
            "reproduce": "python -m voxwire.fuzz "
            + shlex.join(
                ["--target", opts.target, "--seed", str(opts.seed), "--case", str(o.index)]
            ),
        }
    return out


def _invariants(
    report: Report,
    outcomes: list[Outcome],
    opts: Options,
    before: Readings | None,
    after: Readings | None,
    slots: list[probes.SlotProbe],
) -> list[Invariant]:
    """What every stream got, then (when there are readings) what the run left behind."""
    out = _stream_invariants(report, outcomes)
    if before is not None and after is not None:
        out += _leak_invariants(report, opts, before, after, slots)
    return out


def _stream_invariants(report: Report, outcomes: list[Outcome]) -> list[Invariant]:
    v = report.verdicts
    out = [
        Invariant("crashes (UNKNOWN or reason INTERNAL)", str(v["crash"]), v["crash"] == 0),
        Invariant("streams without a status", str(v["no_status"]), v["no_status"] == 0),
        Invariant("non-OK statuses without a reason", str(v["no_reason"]), v["no_reason"] == 0),
        Invariant(
            "valid streams disturbed",
            f"{v['disturbed']} of {report.meta['valid_streams']}",
            v["disturbed"] == 0,
        ),
    ]
    served = [o for o in outcomes if o.got_status and o.verdict not in _CLIENT_SIDE]
    bare = sum(not o.trailers for o in served)
    out.append(
        Invariant(
            "server statuses with the timing trailers",
            f"{len(served) - bare} of {len(served)}",
            bare == 0,
        )
    )
    unflagged = sum(bool(o.reason) and o.retryable not in ("true", "false") for o in outcomes)
    out.append(Invariant("reasons with metadata.retryable", f"{unflagged} without", unflagged == 0))
    wrong = sum(report.meta["wrong_reason"].values())
    out.append(
        Invariant(
            "hostile streams refused with the contract's reason ("
            + ", ".join(f"{f}: {r}" for f, r in EXPECTED_REASON.items())
            + ")",
            f"{wrong} wrong",
            wrong == 0,
        )
    )
    return out


def _leak_invariants(
    report: Report,
    opts: Options,
    before: Readings,
    after: Readings,
    slots: list[probes.SlotProbe],
) -> list[Invariant]:
    out: list[Invariant] = []

    def delta(name: str, b: float | None, a: float | None, slack: float = 0.0) -> None:
        if b is None or a is None:
            out.append(Invariant(name, "not available", None))
        else:
            out.append(Invariant(name, f"{b:g} -> {a:g}", a - b <= slack))

    delta("adapter open streams (gauge), before -> after", before.streams, after.streams)
    delta("adapter asyncio tasks, before -> after", before.tasks, after.tasks)
    grew = before.tasks is not None and after.tasks is not None and after.tasks > before.tasks
    if grew and before.task_kinds is not None and after.task_kinds is not None:
        kinds_grown = {
            kind: n - before.task_kinds.get(kind, 0)
            for kind, n in sorted(after.task_kinds.items())
            if n > before.task_kinds.get(kind, 0)
        }
        if kinds_grown:
            named = ", ".join(f"{kind} +{n:g}" for kind, n in kinds_grown.items())
            # What the failed count above consists of (grpc's own server tasks come and go).
            out.append(Invariant("adapter tasks that grew, by kind", named, None))
    report.leaks["adapter"] = {"before": asdict(before), "after": asdict(after)}
    for name, b, a in (
        ("adapter's Triton calls in the run, by end", before.triton_calls, after.triton_calls),
        (
            "adapter's Triton cancels in the run, by why",
            before.triton_cancels,
            after.triton_cancels,
        ),
    ):
        if b is not None and a is not None:
            counted = {k: v - b.get(k, 0) for k, v in sorted(a.items()) if v > b.get(k, 0)}
            shown = ", ".join(f"{k} {v:g}" for k, v in counted.items()) or "none"
            out.append(Invariant(name, shown, None))  # a figure, not a promise
    if opts.triton_down_at is not None:
        n, secs = opts.triton_down_at
        out.append(Invariant("Triton stayed up", f"down after {n} cases ({secs:.0f} s)", False))
    if after.triton_ready is not None:
        out.append(
            Invariant("Triton alive after the run", str(after.triton_ready), after.triton_ready)
        )
    if after.triton_pending is None:
        out.append(Invariant("Triton pending requests after", "not available", None))
    else:
        pending = sum(after.triton_pending.values())
        out.append(Invariant("Triton pending requests after", f"{pending:g}", pending == 0))
    for probe in slots:
        out.append(
            Invariant(
                f"Triton sequence slots free ({probe.model})",
                f"{probe.answered} of {probe.slots}",
                probe.leaked == 0,
            )
        )
    report.leaks["slots"] = [asdict(p) for p in slots]
    if before.rss is None or after.rss is None:
        out.append(Invariant("adapter RSS back near its start", "not available", None))
    else:
        mb = 1024 * 1024
        grown = (after.rss - before.rss) / mb
        peak = f", peak {before.peak_rss / mb:.0f}" if before.peak_rss else ""
        out.append(
            Invariant(
                f"adapter RSS back near its start (+{opts.rss_slack_mb:g} MB)",
                f"{before.rss / mb:.0f} -> {after.rss / mb:.0f} MB{peak}",
                grown <= opts.rss_slack_mb,
            )
        )
    if opts.adapter_log is not None and before.log_size is not None:
        counts = probes.count_log(opts.adapter_log, before.log_size)
        report.leaks["log"] = counts
        for name, n in counts.items():
            out.append(Invariant(f"log lines: {name}", str(n), n == 0))
    return out


def markdown(data: dict[str, Any]) -> str:
    """The figures of a report's JSON as Markdown tables (for docs/fuzzing.md)."""
    m = data["meta"]
    lines = [
        f"{m['cases']:,} cases against {m['target']}, {m['concurrency']} at a time, seed "
        f"{m['seed']}: {m['seconds']} s ({m['cases_per_s']} cases/s), {m['valid_streams']:,} "
        "valid streams beside the hostile ones.",
        "",
        "| family | " + " | ".join(VERDICTS) + " |",
        "|---|" + "---:|" * len(VERDICTS),
    ]
    for family, counts in data["by_family"].items():
        lines.append(f"| {family} | " + " | ".join(str(counts.get(v, "")) for v in VERDICTS) + " |")
    lines.append("| **all** | " + " | ".join(f"**{data['verdicts'][v]}**" for v in VERDICTS) + " |")
    lines += ["", "| status (code reason) | streams |", "|---|---:|"]
    lines += [f"| {k} | {n:,} |" for k, n in data["statuses"].items()]
    lines += ["", "| invariant | value | holds |", "|---|---|---|"]
    for inv in data["invariants"]:
        holds = {True: "yes", False: "**no**", None: "not measured"}[inv["ok"]]
        lines.append(f"| {inv['name']} | {inv['value']} | {holds} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(markdown(json.loads(open(sys.argv[1]).read())))
