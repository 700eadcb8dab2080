"""``voxwire-loadtest`` / ``python -m loadtest``: run, slo, merge, worker, report.

    voxwire-loadtest run [SCENARIO.toml] [--target grpc --address 127.0.0.1:50051 ...]
    voxwire-loadtest slo SCENARIO.toml          # highest rate/concurrency that holds the SLO
    voxwire-loadtest merge DIR [DIR ...]        # interval logs of several machines -> one result
    voxwire-loadtest worker SCENARIO.toml --count N --start-at EPOCH   # one Indexed Job pod
    voxwire-loadtest report result.json         # re-render the HTML report

Every run writes ``result.json``, ``result.csv`` and ``report.html`` under ``--out``. The tool
sends only to the address it is given (loopback by default), and every run is bounded by
``run.max_duration_s`` and ``run.max_streams``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loadtest import report, results, runner, scenario, slo
from loadtest.merge import Merged, MergeError, merge
from loadtest.targets.gateway import API_KEY_ENV

_INTERRUPTED = 130  # the shell's status for a command ended by SIGINT


def _on_off(value: str) -> bool:
    if value in ("on", "true", "yes"):
        return True
    if value in ("off", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"on or off, not {value!r}")


_OVERRIDES: dict[str, tuple[str, Callable[[str], Any], str]] = {
    # flag: (scenario key, type, help)
    "name": ("name", str, "scenario name"),
    "kind": ("kind", str, "stt, tts or mixed"),
    "target": ("target.kind", str, "grpc, triton, tritonclient, echo, gateway or null-relay"),
    "address": ("target.address", str, "host:port of the target (default 127.0.0.1:50051)"),
    "api_key": (
        "target.api_key",
        str,
        "API key: gateway (default: $VOXWIRE_API_KEY); grpc, through a gateway's front",
    ),
    "duration": ("run.duration_s", float, "seconds of arrivals"),
    "max_duration": ("run.max_duration_s", float, "hard stop, seconds"),
    "max_streams": ("run.max_streams", int, "concurrent sessions at most"),
    "workers": ("run.workers", int, "worker processes"),
    "seed": ("run.seed", int, "seed of every random draw"),
    "warmup": ("run.warmup_s", float, "seconds not recorded at the start"),
    "process": (
        "arrivals.process",
        str,
        "poisson, constant, step, ramp, burst, trace, concurrency",
    ),
    "rate": (
        "arrivals.rate",
        float,
        "sessions per second (Poisson arrivals unless --process or the scenario says otherwise)",
    ),
    "to_rate": ("arrivals.to_rate", float, "ramp: final rate"),
    "concurrency": ("arrivals.sessions", int, "fixed concurrency: sessions at once"),
    "trace": ("arrivals.trace", Path, "arrival trace file"),
    "chunk_ms": ("stt.chunk_ms", int, "STT chunk length (20, 100, 160 ...)"),
    "stt_model": ("stt.model", str, "STT model"),
    "stt_interim": (
        "stt.interim_results",
        _on_off,
        "STT interim results: on (default) or off (for a model that makes none)",
    ),
    "stt_encoding": (
        "stt.encoding",
        str,
        "STT audio on the wire: pcm_s16le (default), pcm_f32le, mulaw or alaw (8 kHz)",
    ),
    "stt_rate": ("stt.sample_rate_hz", int, "STT audio's rate (default: the speech set's)"),
    "tts_encoding": ("tts.encoding", str, "TTS audio asked for: pcm_s16le, mulaw, ..."),
    "tts_rate": ("tts.sample_rate_hz", int, "TTS audio's rate (default 24000)"),
    "tts_model": ("tts.model", str, "TTS model"),
    "speech": ("stt.speech", Path, "folder of WAVs + transcripts.json"),
    "search_low": ("search.low", float, "the lowest level tried"),
    "search_high": ("search.high", float, "the highest level tried"),
    "search_tolerance": ("search.tolerance", float, "stop when the bounds are this close"),
    "search_repeats": ("search.repeats", int, "runs pooled per level"),
    "search_max_repeats": (
        "search.max_repeats",
        int,
        "runs a level may take in all when its samples are too few for a verdict "
        "(default: three times --search-repeats)",
    ),
    "trial": ("search.trial_s", float, "seconds of each run of a level"),
}


def _add_overrides(parser: argparse.ArgumentParser, *, search: bool = False) -> None:
    """The scenario flags; the SLO search's own (``search.*``) only where a search runs."""
    parser.add_argument("scenario", nargs="?", type=Path, help="scenario TOML file")
    for flag, (key, kind, text) in _OVERRIDES.items():
        if key.startswith("search.") and not search:
            continue
        parser.add_argument(f"--{flag.replace('_', '-')}", dest=flag, type=kind, help=text)
    parser.add_argument(
        "--slo",
        action="append",
        default=[],
        metavar="METRIC:pNN<=MS",
        help="an objective, e.g. stt.final:p99<=300 (repeatable; p100: the largest sample)",
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    parser.add_argument("--quiet", action="store_true", help="no live progress")


def load_scenario(args: argparse.Namespace) -> scenario.Scenario:
    values = {key: getattr(args, flag, None) for flag, (key, _, _) in _OVERRIDES.items()}
    if values.get("arrivals.sessions") is not None and values.get("arrivals.process") is None:
        values["arrivals.process"] = "concurrency"
    s = scenario.load(args.scenario, values)
    if (
        values.get("arrivals.rate") is not None
        and values.get("arrivals.process") is None
        and s.arrivals.process == "concurrency"
    ):
        # A rate means arrivals at that rate: the default process, one session at a time,
        # ignored it (`--rate 2 --duration 3` ran 973 back-to-back sessions of a fast model).
        values["arrivals.process"] = "poisson"
        s = scenario.load(args.scenario, values)
    if args.slo:
        objectives = tuple(scenario.parse_objective(o) for o in args.slo)
        s = dataclasses.replace(s, slo=dataclasses.replace(s.slo, objectives=objectives))
        scenario.validate(s)  # here, not first in a worker
    scenario.check_files(s)
    return s


def _out_dir(args: argparse.Namespace, s: scenario.Scenario) -> Path:
    if args.out is not None:
        return Path(args.out)
    return Path("out") / "loadtest" / f"{s.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def write_outputs(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    (out / "result.csv").write_text(results.to_csv(result))
    (out / "report.html").write_text(report.render(result))


def _figure(ms: float) -> str:
    return f"{ms:.0f}" if ms >= 1000 else f"{ms:.1f}" if ms >= 100 else f"{ms:.2f}"


def print_summary(result: dict[str, Any], out: Path) -> None:
    console = Console()
    # Simple rules and figures of at most 7 characters: the table fits 80 columns whole.
    title = escape(f"{result['scenario']['name']} (ms)")
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    cols = ["count", "p50", "p90", "p99", "p99.9", "max"]
    names = [n for n in result["metrics"] if not results.per_kind_stage(n)]
    # The metric column is never cut short ("stt.message_from_…" on an 80-column terminal).
    table.add_column(
        "metric", justify="left", no_wrap=True, min_width=max(map(len, names), default=6)
    )
    for column in cols:
        table.add_column(column, justify="right")
    for name in names:
        m = result["metrics"][name]
        table.add_row(name, *(_figure(m[c]) if c != "count" else str(m[c]) for c in cols))
    console.print(table)
    s = result["sessions"]
    rate = s["error_rate"]
    kinds = result.get("errors_by_kind") or {}

    def split(key: str) -> str:  # a mixed run: which kind each error hit
        return " (" + ", ".join(f"{k.upper()} {kinds[k].get(key, 0)}" for k in kinds) + ")"

    errors = (
        ", ".join(f"{key} {n}{split(key) if kinds else ''}" for key, n in result["errors"].items())
        or "none"
    )
    console.print(
        f"sessions {s['total']}: ok {s['ok']}, failed {s['failed']}, cut {s['cut']},"
        f" refused {s['refused']}" + (f" (error rate {rate:.1%})" if rate else ""),
        highlight=False,
    )
    # Keys quote what the target said (status and reason): text, never rich markup.
    console.print(f"errors: {errors}", highlight=False, markup=False)
    for key, message in _examples(result):
        console.print(f"  {key}: {message}", highlight=False, markup=False)
    if result.get("notices"):
        notices = ", ".join(f"{kind} {n}" for kind, n in result["notices"].items())
        console.print(f"notices: {notices}", highlight=False, markup=False)
    for kind, stages in result.get("stages_by_kind", {}).items():
        shares = ", ".join(f"{n} {v['share']:.0%}" for n, v in stages.items() if "share" in v)
        console.print(f"{kind.upper()} streams, share of stage time: {shares}", highlight=False)
    if result["wer"]["wer"] is not None:
        console.print(f"WER {result['wer']['wer']:.3f} over {result['wer']['words']} words")
    tts = result.get("tts") or {}
    if tts.get("contexts"):
        # The playback simulation's verdict: the one TTS figure a listener hears directly.
        console.print(
            f"TTS underruns: {tts['underruns']} in {tts['contexts']} contexts,"
            f" {tts['underrun_ms']:.1f} ms in total",
            highlight=False,
        )
    for warning in result["generator"]["warnings"]:
        console.print(f"[red]warning:[/red] {escape(warning)}")
    if result.get("slo"):
        verdict = result["slo"]
        # A miss says which objective and by how much, as the search's last line does: the
        # HTML report has the whole table, but a CI log has only this.
        missed = "; ".join(
            _missed(slo.Check(**check)) for check in verdict["checks"] if not check["passed"]
        )
        console.print(
            f"SLO {slo.state_of(verdict)}" + (f": {missed}" if missed else ""),
            markup=False,
            highlight=False,
        )
    console.print(f"wrote {out}/result.json, result.csv, report.html", markup=False)


def cmd_run(args: argparse.Namespace) -> int:
    s = load_scenario(args)
    out = _out_dir(args, s)
    try:
        merged = runner.run(s, out / "workers", live=not args.quiet)
    except runner.RunInterrupted as stopped:
        if stopped.merged is None:
            raise
        # What was measured until Ctrl-C is a result too (its open sessions counted CUT).
        result = results.build(stopped.merged, s.to_dict(), {"interrupted": True})
        write_outputs(result, out)
        print_summary(result, out)
        print("interrupted: the result holds what was measured until then", file=sys.stderr)
        return _INTERRUPTED
    extra = {"slo": slo.judge(merged, s.slo).to_dict()} if s.slo.objectives else {}
    result = results.build(merged, s.to_dict(), extra)
    write_outputs(result, out)
    print_summary(result, out)
    if failed_outright(result):
        return 1
    return 1 if extra and not extra["slo"]["passed"] else 0


# Statuses of a session that did not reach the target or was not let in.
_NOT_REACHED = frozenset(
    {"UNAVAILABLE", "UNAUTHENTICATED", "PERMISSION_DENIED", "DEADLINE_EXCEEDED", "TIMEOUT"}
)


def _top_errors(result: dict[str, Any]) -> list[tuple[str, int]]:
    """The run's three most frequent error keys and their counts."""
    return sorted(result["errors"].items(), key=lambda kv: -kv[1])[:3]


def _examples(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The first message of each of the run's three most frequent error keys, if it has one."""
    examples = result.get("error_examples") or {}
    return [(key, examples[key]) for key, _ in _top_errors(result) if examples.get(key)]


# What in the scenario a refusal of it names, and the flag (and TOML key) that changes it: the
# target said what it takes (a server of one's own: 16 kHz only, no interim results), the
# tool's user is told where to say it. Matched on the reason, then on the message's words.
_SCENARIO_HINTS = (
    (
        "INVALID_CONFIG",
        "interim_results",
        ("stt",),
        "--{k}-interim off ({k}.interim_results = false)",
    ),
    ("UNSUPPORTED_SAMPLE_RATE", "", ("stt", "tts"), "--{k}-rate ({k}.sample_rate_hz)"),
    ("UNSUPPORTED_ENCODING", "", ("stt", "tts"), "--{k}-encoding ({k}.encoding)"),
    ("UNKNOWN_MODEL", "", ("stt", "tts"), "--{k}-model ({k}.model)"),
)


def _scenario_hint(key: str, message: str, kind: str) -> str:
    """Where a scenario of ``kind`` (stt, tts, mixed) says what the target refused (``key``:
    "CODE/REASON"), or ""."""
    reason = key.split("/")[-1]
    for hinted, word, kinds, flag in _SCENARIO_HINTS:
        if reason == hinted and word in message:
            mine = [k for k in kinds if kind in (k, "mixed")]
            flags = " or ".join(flag.format(k=k) for k in mine)
            return f"{flags}: to what the model takes, as the target's capabilities say"
    return ""


def failed_outright(result: dict[str, Any]) -> bool:
    """A run in which sessions were tried and none succeeded measured nothing of the target
    but its refusals: say why, and exit 1 (with or without an SLO)."""
    s = result["sessions"]
    if s["ok"] or not s["failed"]:
        return False
    top = _top_errors(result)
    why = ", ".join(f"{reason} x{count}" for reason, count in top) or "no status"
    # The address and the key are worth checking when the target could not be reached or
    # would not let the client in; a refusal of what the scenario asked is said by its message.
    reached = not any(key.split("/")[0] in _NOT_REACHED for key, _ in top)
    first = (result.get("error_examples") or {}).get(top[0][0]) if top else None
    print(
        f"error: every session failed ({s['failed']} of {s['total']}): {why}; "
        + (
            f"the target said: {first}"
            if reached and first
            else "is the target up at that address, and the key right?"
        ),
        file=sys.stderr,
    )
    kind = result["scenario"].get("kind", "")
    if reached and top and (hint := _scenario_hint(top[0][0], first or "", kind)):
        print(f"hint: {hint}", file=sys.stderr)
    target = result["scenario"].get("target") or {}
    refused = any(reason.startswith("UNAUTHENTICATED") for reason in result["errors"])
    if refused and target.get("kind") == "grpc" and not target.get("api_key"):
        # The gateway target falls back on $VOXWIRE_API_KEY; the grpc one sends a key only
        # when given one (the adapter takes none, and a key goes nowhere it was not sent).
        hint = ' (--api-key "$VOXWIRE_API_KEY")' if os.environ.get(API_KEY_ENV) else ""
        print(
            f"hint: the grpc target sent no key: give it --api-key{hint} for a gateway's "
            "gRPC front",
            file=sys.stderr,
        )
    return True


def cmd_slo(args: argparse.Namespace) -> int:
    s = load_scenario(args)
    if not s.slo.objectives:
        raise scenario.ScenarioError("slo needs objectives ([slo] objectives or --slo)")
    if s.search.trial_s <= s.limits.warmup_s:
        # Each trial keeps the warm-up: one that ends with it records nothing, and every level
        # would miss as "no samples" only after the whole search.
        raise scenario.ScenarioError(
            f"search.trial_s (--trial, {s.search.trial_s:g} s) must be longer than "
            f"run.warmup_s (--warmup, {s.limits.warmup_s:g} s): a trial records nothing "
            "before its warm-up ends"
        )
    for end, level in (("--search-low", s.search.low), ("--search-high", s.search.high)):
        # Every level between them is a scenario as valid as the two ends: checked before any
        # trial (a level of 0 streams, or over max_streams, failed mid-search, a traceback).
        try:
            scenario.validate(_at_level(s, level))
        except scenario.ScenarioError as exc:
            raise scenario.ScenarioError(
                f"search level {level:g} ({end}, search.{end.removeprefix('--search-')}) "
                f"cannot run: {exc}"
            ) from None
    out = _out_dir(args, s)
    best: dict[str, Any] = {}
    lowest: dict[str, Any] = {}

    def trial(level: float) -> slo.Verdict:
        pooled: list[Path] = []

        def run(count: int) -> tuple[Merged, slo.Verdict]:
            for _ in range(count):
                folder = out / f"level-{level:g}" / f"repeat-{len(pooled)}"
                pooled.append(folder)
                runner.run(_at_level(s, level), folder, live=not args.quiet)
            merged = merge(pooled, pool_runs=True)  # the repeats are runs of their own
            return merged, dataclasses.replace(slo.judge(merged, s.slo), runs=len(pooled))

        merged, verdict = run(s.search.repeats)
        # A level too low to make the samples a bound needs in its repeats is not missed: it
        # was not measured enough to judge. Run it again, at most to the cap, and say so.
        while more := slo.more_repeats(verdict, s.search.repeat_cap):
            short = "; ".join(c.note for c in verdict.checks if c.short)
            Console().print(
                f"{s.search.over} {level:g}: inconclusive after {verdict.runs} runs "
                f"({short}): {more} more",
                markup=False,
                highlight=False,
            )
            merged, verdict = run(more)
        if verdict.passed and level >= best.get("level", -1):
            best.update(level=level, merged=merged, verdict=verdict)
        if level <= lowest.get("level", math.inf):
            lowest.update(level=level, merged=merged, verdict=verdict)
        return verdict

    found = slo.search(trial, s.search)
    # The result holds one level's own figures: the best that held or, when none did, the
    # lowest, which missed by least. (A merge of the whole folder pooled every level probed,
    # and any earlier search's there, into numbers of no level at all.)
    shown = best or lowest
    extra = {
        "search": {**found.to_dict(), "figures_at": shown["level"]},
        "slo": shown["verdict"].to_dict(),
    }
    result = results.build(shown["merged"], _at_level(s, shown["level"]).to_dict(), extra)
    write_outputs(result, out)
    print_summary(result, out)
    over = s.search.over
    if found.best is not None:
        Console().print(f"highest {over} holding the SLO: {found.best}")
        return 0
    # The summary above already lists what the lowest level missed, and by how much.
    lowest_verdict: slo.Verdict = shown["verdict"]
    how = (
        f"was inconclusive after {lowest_verdict.runs} runs (above): lengthen --trial or "
        "raise --search-max-repeats"
        if lowest_verdict.inconclusive
        else "missed it (above)"
    )
    Console().print(f"no {over} held the SLO: the lowest, {shown['level']:g}, {how}", markup=False)
    return 1


def _missed(check: slo.Check) -> str:
    """A failed check as a line says it: what, and by how much."""
    seen = (
        f"observed {slo.figure(check.name, check.observed)}"
        if check.observed is not None
        else "no samples"
    )
    bound = (
        f", upper bound {slo.figure(check.name, check.bound)}" if check.bound is not None else ""
    )
    note = f" ({check.note})" if check.note and check.observed is not None else ""
    return f"{check.name}: {seen}{bound}{note}"


def _at_level(s: scenario.Scenario, level: float) -> scenario.Scenario:
    arrivals = s.arrivals
    if s.search.over == "concurrency":
        arrivals = dataclasses.replace(arrivals, process="concurrency", sessions=round(level))
    else:
        process = arrivals.process if arrivals.process != "concurrency" else "poisson"
        arrivals = dataclasses.replace(arrivals, process=process, rate=level)
    limits = dataclasses.replace(
        s.limits,
        duration_s=s.search.trial_s,
        max_duration_s=max(s.limits.max_duration_s, s.search.trial_s * 2),
    )
    return dataclasses.replace(s, arrivals=arrivals, limits=limits)


def cmd_merge(args: argparse.Namespace) -> int:
    merged = merge(args.dirs)
    s = scenario.load(args.scenario) if args.scenario else scenario.Scenario()
    extra = {"slo": slo.judge(merged, s.slo).to_dict()} if s.slo.objectives else {}
    result = results.build(merged, s.to_dict(), extra)
    out = args.out or Path("out") / "loadtest" / "merged"
    write_outputs(result, out)
    print_summary(result, out)
    return 0


# How late a worker may start against --start-at (clocks of machines differ by this much).
_START_SLACK_S = 1.0


def cmd_worker(args: argparse.Namespace) -> int:
    from loadtest.worker import WorkerSpec, worker_entry

    s = load_scenario(args)
    late_s = time.time() - args.start_at
    if late_s > _START_SLACK_S:
        # Its sessions would all be overdue at once, their lateness charged to the target
        # (session.setup p50 1.4 s against 5-10 ms): a pod scheduled late measures nothing.
        raise scenario.ScenarioError(
            f"--start-at is {late_s:.1f} s in the past: this worker would start every overdue "
            "session at once; give every worker a start time ahead (a minute: k8s/)"
        )
    index = (
        args.index if args.index is not None else int(os.environ.get("JOB_COMPLETION_INDEX", "0"))
    )
    s = dataclasses.replace(s, limits=dataclasses.replace(s.limits, workers=args.count))
    out = args.out or Path("out") / "loadtest" / "worker"
    spec = WorkerSpec(s.to_dict(), index, args.count, str(out), args.start_at)
    worker_entry(spec.to_json())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    try:
        result = json.loads(args.result.read_text())
    except FileNotFoundError:
        raise scenario.ScenarioError(f"{args.result}: no such result file") from None
    except (OSError, ValueError) as exc:
        raise scenario.ScenarioError(f"{args.result}: not a result.json: {exc}") from None
    out = args.out or args.result.with_name("report.html")
    out.write_text(report.render(result))
    print(f"wrote {out}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="voxwire-loadtest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = top.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run a scenario")
    _add_overrides(run_p)
    slo_p = sub.add_parser("slo", help="search the highest level that holds the SLO")
    _add_overrides(slo_p, search=True)
    merge_p = sub.add_parser("merge", help="merge worker outputs (several machines)")
    merge_p.add_argument("dirs", nargs="+", type=Path)
    merge_p.add_argument("--scenario", type=Path, help="the scenario (for its SLO and name)")
    merge_p.add_argument("--out", type=Path)
    worker_p = sub.add_parser("worker", help="run one worker (a Kubernetes Indexed Job pod)")
    _add_overrides(worker_p)
    worker_p.add_argument("--index", type=int, help="default: $JOB_COMPLETION_INDEX")
    worker_p.add_argument("--count", type=int, required=True, help="workers in all")
    worker_p.add_argument(
        "--start-at", type=float, required=True, help="start epoch (s) shared by every worker"
    )
    report_p = sub.add_parser("report", help="re-render report.html from result.json")
    report_p.add_argument("result", type=Path)
    report_p.add_argument("--out", type=Path)
    return top


def _stop_cleanly(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.command in ("run", "slo"):
        # SIGINT and SIGTERM both stop a run the way Ctrl-C does (the workers stopped, what they
        # measured merged and written, exit 130). Set here, not left to Python's default:
        # a job a non-interactive shell starts in the background inherits SIGINT *ignored*,
        # and Python then never raises KeyboardInterrupt, so `kill -INT` did nothing; SIGTERM
        # (timeout(1), a CI's stop) killed the parent and orphaned its workers.
        signal.signal(signal.SIGINT, _stop_cleanly)
        signal.signal(signal.SIGTERM, _stop_cleanly)
    commands = {
        "run": cmd_run,
        "slo": cmd_slo,
        "merge": cmd_merge,
        "worker": cmd_worker,
        "report": cmd_report,
    }
    try:
        sys.exit(commands[args.command](args))
    except (scenario.ScenarioError, runner.RunError, MergeError) as exc:
        # Plain print: rich wraps a long line (a path) at the terminal's width.
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (runner.RunInterrupted, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        sys.exit(_INTERRUPTED)
