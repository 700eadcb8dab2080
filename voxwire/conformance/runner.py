"""Runs the cases against a target and judges them (docs/design/conformance.md).

``await run_kit(Options(target=...))`` returns a Report; the CLI (``__main__``) prints and
writes it. Cases run concurrently up to ``parallel``; every call has a deadline and the whole
run has one (a case still running then fails with "run deadline").
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fnmatch
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

# Importing the check modules registers their properties.
from voxwire import call_headers
from voxwire.conformance import (  # noqa: F401
    richstatus,
    signals,
    stream_checks,
    stt_checks,
    tts_checks,
)
from voxwire.conformance.casefile import (
    STREAM_SERVICES,
    Case,
    bundled_files,
    check_names,
    load,
    select,
)
from voxwire.conformance.catalog import ServerCatalog, encoding_value, limit_names
from voxwire.conformance.driver import SETTLE_S, Outcome, run_stream
from voxwire.conformance.expect import evaluate
from voxwire.conformance.expr import evaluate as evaluate_expr
from voxwire.conformance.expr import names_in
from voxwire.conformance.plan import Gate, Reading, Skip, build
from voxwire.conformance.probes import PROBES, UNARY_TIMEOUT_S, ProbeContext
from voxwire.conformance.verdict import PROPERTIES, Verdict, failed
from voxwire.v1 import capabilities_pb2, capabilities_pb2_grpc
from voxwire.wire import FIXED_WINDOW

PASS, FAIL, SKIP, ERROR = "pass", "fail", "skip", "error"
KNOWN_FAILING, UNEXPECTED_PASS, FLAKY = "known-failing", "unexpected-pass", "flaky"
BAD = frozenset({FAIL, ERROR, UNEXPECTED_PASS})
# GetCapabilities failing so: nothing that speaks voxwire.v1 answers at the target.
UNREACHABLE = frozenset({"UNAVAILABLE", "UNIMPLEMENTED", "DEADLINE_EXCEEDED"})
# grpc/grpc#36066 can replace a server's status with INTERNAL: run such a case again.
RACE_ATTEMPTS = 3
# A plain writer's case (Case.writer "plain") is about that race itself, so one stream that
# keeps its status proves little: a server that answers at once, without reading what the
# client still sends, kept it in 11 of 50 streams here (kit and server each in a process of
# their own), and "pass on the first stream that keeps it" let it pass 11 of 20 kit runs. So
# the case runs up to PLAIN_ATTEMPTS streams and fails once PLAIN_RACES_TO_FAIL of them lost
# the status (a server that drains may still lose one on a starved event loop), stopping as
# soon as the outcome is settled: a server that drains runs PLAIN_ATTEMPTS -
# PLAIN_RACES_TO_FAIL + 1 streams (about a second). Measured with 5 and 2: such a server
# failed 20 of 20 runs on a quiet machine and 9 of 10 with both cores busy, and the example
# server (which drains) lost none of 160 streams either way; 7 leaves a server that answers
# at once less chance where the machine is busy (6 % of runs if it loses half its streams).
PLAIN_ATTEMPTS = 7
PLAIN_RACES_TO_FAIL = 2
# A case that holds a model's whole capacity (Case.holds) and meets OVERLOADED, say while the
# server still frees what earlier cases held, runs again this often after the server's
# RetryInfo delay (at least BUSY_PAUSE_S), then is inconclusive: skipped, never failed. Any
# other case refused OVERLOADED runs again as often, then is judged as it ended.
BUSY_ATTEMPTS = 3
BUSY_PAUSE_S = 0.5


@dataclass(frozen=True, slots=True)
class Options:
    target: str
    models: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    known_failing: tuple[str, ...] = ()  # case ids or globs
    known_flaky: tuple[str, ...] = ()  # case ids or globs whose failures are not counted
    case_files: tuple[Path, ...] = ()
    slow: bool = False
    max_wait_s: float = 10.0
    case_timeout_s: float = 20.0  # a stream's deadline, unless its case sets timeout_s
    settle_s: float = SETTLE_S  # how long a stream that should fail may take to end by itself
    parallel: int = 4
    deadline_s: float = 300.0
    headers: tuple[tuple[str, str], ...] = ()  # metadata of every call (e.g. authorization)
    speech: Path | None = None  # a WAV file sent as "speech" instead of the bundled one


@dataclass(slots=True)
class CaseResult:
    case: Case
    result: str
    evidence: str
    model: str = ""
    duration_s: float = 0.0
    attempts: int = 0


@dataclass(slots=True)
class Report:
    target: str
    started_at: str
    duration_s: float = 0.0
    models: list[str] = field(default_factory=list)
    results: list[CaseResult] = field(default_factory=list)
    # Why GetCapabilities failed, when it did ("UNAVAILABLE: ..."): every case then fails on
    # it, and the command line says it once.
    catalog_error: str = ""
    # --models names that the server does not serve: nothing was run (said before any case).
    unknown_models: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unreachable and not any(r.result in BAD for r in self.results)

    @property
    def unreachable(self) -> bool:
        """Nothing that speaks voxwire.v1 answered at the target: no verdict on a server."""
        return self.catalog_error.split(":", 1)[0] in UNREACHABLE

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            out[r.result] = out.get(r.result, 0) + 1
        return out


def load_cases(extra: Sequence[Path] = (), patterns: Sequence[str] = ()) -> list[Case]:
    """The bundled cases plus ``extra`` files, filtered by ``patterns``. Raises CaseFileError."""
    cases = load([*bundled_files(), *extra])
    check_names(cases, PROPERTIES, PROBES)
    return select(cases, patterns)


def read_case_list(path: Path) -> tuple[str, ...]:
    """Case ids (or globs) of a known-failing or known-flaky file, one per line; ``#`` starts
    a comment. Raises OSError."""
    ids = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            ids.append(entry)
    return tuple(ids)


async def run_kit(options: Options, cases: Sequence[Case] | None = None) -> Report:
    """Run ``cases`` (default: the bundled ones, filtered) against ``options.target``."""
    if cases is None:
        cases = load_cases(options.case_files, options.patterns)
    started = time.monotonic()
    report = Report(
        options.target, datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    )
    async with call_headers.channel(options.target, options.headers) as channel:
        catalog = await _catalog(channel, options, report)
        if catalog is not None:
            report.models = [m.name for m in catalog.caps.models]
            report.unknown_models = [m for m in options.models if m not in report.models]
            if report.unknown_models:
                # A typo'd model must stop the run before its cases, not after them with a
                # table that says "conforms" (the README's exit status 2).
                report.duration_s = time.monotonic() - started
                return report
        run = _Run(options, channel, catalog, cases)
        tasks = [asyncio.create_task(run.scheduled(c), name=c.id) for c in cases]
        done, pending = (
            await asyncio.wait(tasks, timeout=options.deadline_s) if tasks else (set(), set())
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for case, task in zip(cases, tasks, strict=True):
            if task in done and task.exception() is None:
                result = task.result()
            elif task in done:
                exc = task.exception()
                result = CaseResult(case, ERROR, f"the kit failed: {type(exc).__name__}: {exc}")
            else:
                result = CaseResult(case, FAIL, f"run deadline ({options.deadline_s:g} s) reached")
            report.results.append(_judge(result, options.known_failing, options.known_flaky))
    report.duration_s = time.monotonic() - started
    return report


async def _catalog(
    channel: grpc.aio.Channel, options: Options, report: Report
) -> ServerCatalog | None:
    stub = capabilities_pb2_grpc.CapabilitiesStub(channel)
    try:
        caps = await stub.GetCapabilities(
            capabilities_pb2.GetCapabilitiesRequest(), timeout=UNARY_TIMEOUT_S
        )
    except grpc.aio.AioRpcError as exc:
        report.catalog_error = f"{exc.code().name}: {exc.details()}"
        return None
    return ServerCatalog(caps, options.models)


def _judge(result: CaseResult, known: Sequence[str], flaky: Sequence[str] = ()) -> CaseResult:
    listed = any(fnmatch.fnmatchcase(result.case.id, p) for p in known)
    if result.result == FAIL and any(fnmatch.fnmatchcase(result.case.id, p) for p in flaky):
        result.result = FLAKY  # reported, not counted: the server fails it only sometimes
    elif listed and result.result in (FAIL, ERROR):
        result.result = KNOWN_FAILING
    elif listed and result.result == PASS:
        result.result = UNEXPECTED_PASS
        result.evidence = f"passes now: remove it from the known-failing list ({result.evidence})"
    return result


class _Run:
    def __init__(
        self,
        options: Options,
        channel: grpc.aio.Channel,
        catalog: ServerCatalog | None,
        cases: Sequence[Case] = (),
    ) -> None:
        self.options = options
        self.channel = channel
        self.catalog = catalog
        self.slots = asyncio.Semaphore(options.parallel)
        # Streams the kit holds on each model at once: no more than the model admits
        # (ModelCapacity.max_streams), including those of cases that sit out a limit, which
        # take no slot of ``slots`` (the kit does nothing meanwhile) but hold a stream of the
        # server's all the while. Without it, a --slow run's four waiting cases (30 and 45 s)
        # with four others beside them were refused OVERLOADED by stt_pocketsphinx, which
        # admits four, and failed.
        self._model_slots: dict[str, asyncio.Semaphore] = {}
        self._whole_locks: dict[str, asyncio.Lock] = {}
        self.busy_s: dict[str, float] = {}  # stream time per case (waiting for a slot excluded)
        # Cases that hold a model's whole capacity (Case.holds) run after every other case has
        # ended, one at a time: a case that sits out a limit takes no slot but may hold a
        # context all the while.
        self._others_left = sum(1 for c in cases if not c.holds)
        self._others_done = asyncio.Event()
        if not self._others_left:
            self._others_done.set()
        self._alone = asyncio.Lock()
        # Read once here; the CLI checks the file before the run (signals.load_speech).
        self.speech = signals.load_speech(options.speech) if options.speech else None

    async def scheduled(self, case: Case) -> CaseResult:
        """``case``'s result, run when its turn comes."""
        if case.holds:
            await self._others_done.wait()
            async with self._alone:
                return await self.case(case)
        try:
            return await self.case(case)
        finally:
            self._others_left -= 1
            if not self._others_left:
                self._others_done.set()

    async def case(self, case: Case) -> CaseResult:
        reason = self._skip_reason(case)
        if reason:
            return CaseResult(case, SKIP, reason)
        model = None
        if case.service in STREAM_SERVICES:
            if self.catalog is None:
                return CaseResult(case, FAIL, "GetCapabilities failed: no model to run on")
            picked = self.catalog.pick(case.kind, case.needs, case.lacks, _encodings(case))
            if isinstance(picked, str):
                return CaseResult(case, SKIP, picked)
            model = picked
            reason = self._capacity_skip(case, model)
            if reason:
                return CaseResult(case, SKIP, reason, model.name)
        try:
            if case.probe:
                t0 = time.monotonic()
                ctx = ProbeContext(
                    self.channel, self.catalog, case, model, self._verdict, self._whole_model
                )
                verdict, attempts = await PROBES[case.probe](ctx), 1
                self.busy_s[case.id] = time.monotonic() - t0
            else:
                assert model is not None
                verdict, attempts = await self._stream(case, model)
        except Skip as exc:
            return CaseResult(case, SKIP, str(exc), model.name if model else "")
        result = PASS if verdict.ok else FAIL
        name = model.name if model else ""
        busy = self.busy_s.get(case.id, 0.0)
        return CaseResult(case, result, verdict.evidence, name, busy, attempts)

    def _skip_reason(self, case: Case) -> str:
        if self.catalog is None:
            return ""
        claimed = self.catalog.caps.server_features
        for feature in case.server_needs:
            if not getattr(claimed, feature):
                return f"the server does not claim ServerFeatures.{feature}"
        limits = self.catalog.limits()
        for name in case.limits:
            if not limits[name]:
                return f"the server advertises no {name}"
        if case.waits:
            wait_ms = limits[case.waits]
            if not wait_ms:
                return f"the server advertises no {case.waits}"
            if wait_ms > self.options.max_wait_s * 1000 and not self.options.slow:
                return (
                    f"{case.waits} is {wait_ms / 1000:g} s, longer than --max-wait "
                    f"{self.options.max_wait_s:g} s (run with --slow)"
                )
            # Waited out, it would outlast the whole run: cut by the run's deadline, it was
            # failed ("run deadline reached"), and the cases that run last, after every
            # other (Case.holds), with it. A --slow run against the adapter's hour of
            # max_stream_duration did that.
            needs_s = wait_ms / 1000 + self.options.case_timeout_s
            if needs_s > self.options.deadline_s:
                return (
                    f"{case.waits} is {wait_ms / 1000:g} s: waited out, the case would "
                    f"outlast the run's --deadline {self.options.deadline_s:g} s (give it "
                    f"{needs_s:g} s or more)"
                )
        if case.when and not evaluate_expr(case.when, limit_names(limits, None)):
            return f"needs {case.when} ({_values(case.when, limits)})"
        return ""

    def _capacity_skip(self, case: Case, model: capabilities_pb2.ModelCapabilities) -> str:
        """Why a case that holds ``model``'s capacity cannot run on it ("" when it can)."""
        if not case.holds or self.catalog is None:
            return ""
        need = evaluate_expr(case.holds, limit_names(self.catalog.limits(), None))
        admits = model.capacity.max_streams  # 0: not advertised
        if admits and admits < need:
            unit = "contexts" if case.kind == "tts" else "streams"
            return (
                f"needs {need} {unit} of {model.name} at once ({case.holds}); "
                f"the server admits {admits}"
            )
        return ""

    def _model_size(self, model: capabilities_pb2.ModelCapabilities) -> int:
        admits = model.capacity.max_streams or self.options.parallel  # 0: not advertised
        return min(self.options.parallel, admits)

    def _model_slot(self, model: capabilities_pb2.ModelCapabilities) -> asyncio.Semaphore:
        slot = self._model_slots.get(model.name)
        if slot is None:
            slot = self._model_slots[model.name] = asyncio.Semaphore(self._model_size(model))
        return slot

    @contextlib.asynccontextmanager
    async def _whole_model(self, model: capabilities_pb2.ModelCapabilities) -> AsyncIterator[int]:
        """Every place of ``model``'s slot (ProbeContext.whole_model), taken one by one under
        a lock of the model's: two takers never hold a part each (other cases take one)."""
        every = [self._model_slot(model)] * self._model_size(model)
        async with self._whole_locks.setdefault(model.name, asyncio.Lock()), _holding(every):
            yield model.capacity.max_streams

    def _wait_s(self, case: Case) -> float:
        if not case.waits or self.catalog is None:
            return 0.0
        return self.catalog.limits()[case.waits] / 1000

    async def _verdict(
        self,
        case: Case,
        model: capabilities_pb2.ModelCapabilities,
        slot: bool,
        gate: Gate | None = None,
    ) -> Verdict:
        verdict, _ = await self._stream(case, model, slot, gate)
        return verdict

    async def _stream(
        self,
        case: Case,
        model: capabilities_pb2.ModelCapabilities,
        slot: bool = True,
        gate: Gate | None = None,
    ) -> tuple[Verdict, int]:
        assert self.catalog is not None
        plan = build(case, self.catalog, model, gate, self.speech)
        wait_s = self._wait_s(case)
        # A case that sits out a limit costs the kit nothing meanwhile: it takes no slot of
        # the run's, only one of its model's.
        held: tuple[asyncio.Semaphore, ...] = ()
        if slot:
            held = (self._model_slot(model),) if wait_s else (self.slots, self._model_slot(model))
        # A gated stream (a probe's rendezvous) happens once: it cannot be run again.
        attempts = 1 if gate is not None else RACE_ATTEMPTS
        plain = case.writer == "plain" and gate is None
        races = busy = kept = 0  # streams lost to the race, refused OVERLOADED, that kept it
        while True:
            async with _holding(held), self._channel_for(plan.actions) as channel:
                out = await run_stream(
                    channel,
                    plan,
                    timeout_s=(case.timeout_s or self.options.case_timeout_s) + 2 * wait_s,
                    # Sitting out a limit: the server's clock and ours drift apart under load.
                    settle_s=max(self.options.settle_s, SETTLE_S) + 1.5 * wait_s
                    if wait_s
                    else self.options.settle_s,
                )
            self.busy_s[case.id] = self.busy_s.get(case.id, 0.0) + out.elapsed_s
            overloaded = _overloaded(out) if case.holds or gate is None else None
            if overloaded is not None:
                busy += 1
                if case.holds and busy >= BUSY_ATTEMPTS:
                    raise Skip(
                        f"inconclusive: the server answered OVERLOADED {busy} times while the "
                        f"case held {case.holds} ({overloaded[0]})"
                    )
                # Any other case is run again too: the kit holds no more streams of a model
                # than it admits (_model_slot), but a server frees a stream's place a moment
                # after its status, and may have other clients. Refused every time, it is
                # judged as it ended (OVERLOADED is no case's expected status).
                if busy < BUSY_ATTEMPTS:
                    await asyncio.sleep(max(BUSY_PAUSE_S, overloaded[1]))
                    continue
            if plain:
                if not out.rpc_race:
                    verdict = evaluate(out, plan)
                    kept += 1
                    if not verdict.ok or kept > PLAIN_ATTEMPTS - PLAIN_RACES_TO_FAIL:
                        return verdict, races + kept
                    continue
                races += 1
                if races >= PLAIN_RACES_TO_FAIL:
                    # What the case is about: a plain client's write raced the status.
                    return failed(
                        "the server ended the stream while a plain grpc.aio client still "
                        f"wrote, and the status was lost to grpc/grpc#36066 in {races} of "
                        f"{races + kept} streams ({out.details}): read and drop what the "
                        "client still sends before a failed stream's status "
                        "(docs/contract.md, backpressure)"
                    ), races + kept
                continue
            if not out.rpc_race:
                return evaluate(out, plan), races + 1
            races += 1
            if races >= attempts:
                return failed(
                    "the server ended the stream while the kit was still writing, "
                    f"{races} time(s); its status is lost to grpc/grpc#36066 ({out.details})"
                ), races

    @contextlib.asynccontextmanager
    async def _channel_for(self, actions: Sequence[object]) -> AsyncIterator[grpc.aio.Channel]:
        """The shared channel, or for a client that stops reading a connection of its own whose
        HTTP/2 flow-control window stays at 64 KiB: grpc's BDP probing would grow it to
        megabytes, taking in (and buffering) what the client never reads, so a server's writes
        would never wait (RFC 9113 section 5.2); and on the shared connection an unread stream
        would hold the connection window the other cases need."""
        if not any(isinstance(a, Reading) for a in actions):
            yield self.channel
            return
        options = [FIXED_WINDOW]
        async with call_headers.channel(self.options.target, self.options.headers, options) as own:
            yield own


@contextlib.asynccontextmanager
async def _holding(slots: Sequence[asyncio.Semaphore]) -> AsyncIterator[None]:
    """Each of ``slots``, taken in order (the run's before a model's; a model's several times
    only under its lock, ``_whole_model``: no deadlock)."""
    async with contextlib.AsyncExitStack() as stack:
        for held in slots:
            await stack.enter_async_context(held)
        yield


def _overloaded(out: Outcome) -> tuple[str, float] | None:
    """(where, the server's retry delay in s) when the stream or one of its contexts was
    refused OVERLOADED; None otherwise."""
    found: list[tuple[str, richstatus.RichError | str]] = []
    if out.code.name != "OK":
        found.append(("the stream", richstatus.from_trailers(out.trailers)))
    for index, error in out.of("error"):
        cid = out.responses[index].context_id
        found.append((f"context {cid!r}", richstatus.from_proto(error.error)))
    for where, rich in found:
        if isinstance(rich, richstatus.RichError) and rich.reason == "OVERLOADED":
            return where, rich.retry_delay_s or 0.0
    return None


def _values(expression: str, limits: dict[str, int]) -> str:
    return ", ".join(f"{n} = {limits[n]}" for n in sorted(names_in(expression)) if n in limits)


def _encodings(case: Case) -> list[int]:
    """Encodings a case names explicitly: the model must advertise them."""
    out: list[int] = []
    for step in case.steps:
        for key, fmt_key in (("config", "audio_format"), ("open", "output_format")):
            spec = step.get(key)
            if isinstance(spec, dict):
                name = spec.get(fmt_key, {}).get("encoding")
                if name and name != "UNSPECIFIED":
                    out.append(encoding_value(name))
    return out
