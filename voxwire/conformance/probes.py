"""Probes: named procedures for promises that are not one stream (Capabilities, health,
reflection, every advertised format). Cases name them with ``probe = "..."``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from voxwire.conformance.casefile import Case, Expect
from voxwire.conformance.catalog import ServerCatalog, advertised, encoding_name, every_format
from voxwire.conformance.plan import Gate, Skip
from voxwire.conformance.richstatus import contract_row
from voxwire.conformance.verdict import Verdict, failed, passed
from voxwire.v1 import capabilities_pb2

UNARY_TIMEOUT_S = 5.0
SERVING = health_pb2.HealthCheckResponse.SERVING
SERVICES = {
    "stt": "voxwire.v1.Transcription",
    "tts": "voxwire.v1.Synthesis",
}
CAPABILITIES = "voxwire.v1.Capabilities"
HEALTH = "grpc.health.v1.Health"


@dataclass(slots=True)
class ProbeContext:
    channel: grpc.aio.Channel
    catalog: ServerCatalog | None
    case: Case
    model: capabilities_pb2.ModelCapabilities | None
    # Runs a derived stream case (same machinery as file cases) and returns its verdict; the
    # flag says whether it takes one of the run's slots (True) or runs at once (False); a
    # "gate" step in it waits for the event.
    run_case: Callable[..., Coroutine[Any, Any, Verdict]]
    # Holds every stream of a model the kit may open (no other case's stream of it runs
    # meanwhile) and gives the streams the model admits at once (0: not advertised).
    whole_model: Callable[
        [capabilities_pb2.ModelCapabilities], contextlib.AbstractAsyncContextManager[int]
    ]


Probe = Callable[[ProbeContext], Awaitable[Verdict]]
PROBES: dict[str, Probe] = {}


def probe(name: str) -> Callable[[Probe], Probe]:
    def register(fn: Probe) -> Probe:
        PROBES[name] = fn
        return fn

    return register


@probe("capabilities_well_formed")
async def capabilities_well_formed(ctx: ProbeContext) -> Verdict:
    """Every model has a unique name, a kind, languages, a native rate and formats; at most
    one default per kind; the limits are set."""
    if ctx.catalog is None:
        return failed("GetCapabilities failed")
    caps = ctx.catalog.caps
    if not caps.models:
        return failed("GetCapabilities lists no model")
    names = [m.name for m in caps.models]
    if len(set(names)) != len(names):
        return failed(f"model names repeat: {names}")
    for m in caps.models:
        problem = _model_problem(m)
        if problem:
            return failed(f"model {m.name!r}: {problem}")
    for kind in (capabilities_pb2.MODEL_KIND_STT, capabilities_pb2.MODEL_KIND_TTS):
        defaults = [m.name for m in caps.models if m.kind == kind and m.is_default]
        if len(defaults) > 1:
            return failed(f"{len(defaults)} default models of one kind: {defaults}")
    limits = ctx.catalog.limits()
    wanted = ["max_chunk_bytes", "idle_timeout_ms"]
    if ctx.catalog.models("tts"):
        wanted += ["max_contexts_per_stream", "max_pending_text_bytes"]
    unset = [k for k in wanted if not limits[k]]
    if unset:
        return failed(f"limits not advertised: {', '.join(unset)}")
    return passed(f"{len(names)} models ({', '.join(names)}), limits set")


def _model_problem(m: capabilities_pb2.ModelCapabilities) -> str:
    if not m.name:
        return "no name"
    if m.kind not in (capabilities_pb2.MODEL_KIND_STT, capabilities_pb2.MODEL_KIND_TTS):
        return "kind unspecified"
    if not m.languages:
        return "no languages"
    if not m.native_sample_rate_hz:
        return "no native_sample_rate_hz"
    formats = advertised(m)
    if not formats or not all(f.sample_rates_hz for f in formats):
        return "no formats with rates"
    if m.kind == capabilities_pb2.MODEL_KIND_TTS and not m.voices:
        return "a TTS model without voices"
    return ""


@probe("health_per_service")
async def health_per_service(ctx: ProbeContext) -> Verdict:
    """Check answers SERVING for "", Capabilities and each service that has a model, and
    NOT_FOUND for a service the server does not have."""
    stub = health_pb2_grpc.HealthStub(ctx.channel)
    wanted = ["", CAPABILITIES]
    if ctx.catalog is not None:
        wanted += [name for kind, name in SERVICES.items() if ctx.catalog.models(kind)]
    for service in wanted:
        try:
            resp = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=UNARY_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            return failed(f"Check({service!r}) failed: {exc.code().name} {exc.details()}")
        if resp.status != SERVING:
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
            return failed(f"Check({service!r}) is {status}, a model of it is advertised")
    try:
        await stub.Check(
            health_pb2.HealthCheckRequest(service="voxwire.v1.NoSuchService"),
            timeout=UNARY_TIMEOUT_S,
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() is not grpc.StatusCode.NOT_FOUND:
            return failed(f"Check of an unknown service: {exc.code().name}, expected NOT_FOUND")
    else:
        return failed("Check of an unknown service answered, expected NOT_FOUND")
    return passed(f"SERVING: {', '.join(repr(s) for s in wanted)}; unknown: NOT_FOUND")


@probe("health_watch")
async def health_watch(ctx: ProbeContext) -> Verdict:
    """Watch sends the current status at once (SERVING) for "" and each streaming service."""
    stub = health_pb2_grpc.HealthStub(ctx.channel)
    services = [""]
    if ctx.catalog is not None:
        services += [name for kind, name in SERVICES.items() if ctx.catalog.models(kind)]
    for service in services:
        call = stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=UNARY_TIMEOUT_S)
        try:
            async with asyncio.timeout(UNARY_TIMEOUT_S):
                first = await call.read()
        except (grpc.aio.AioRpcError, TimeoutError) as exc:
            return failed(f"Watch({service!r}) sent nothing: {exc}")
        finally:
            call.cancel()
        if first is grpc.aio.EOF or first.status != SERVING:
            return failed(f"Watch({service!r}) first status {first}, expected SERVING")
    return passed(f"Watch sends SERVING at once for {', '.join(repr(s) for s in services)}")


@probe("reflection_services")
async def reflection_services(ctx: ProbeContext) -> Verdict:
    """Reflection lists the contract's services and serves their descriptors."""
    stub = reflection_pb2_grpc.ServerReflectionStub(ctx.channel)
    streaming = [
        name for kind, name in SERVICES.items() if ctx.catalog is None or ctx.catalog.models(kind)
    ]
    wanted = [*streaming, CAPABILITIES, HEALTH]
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        *(reflection_pb2.ServerReflectionRequest(file_containing_symbol=s) for s in streaming),
    ]
    listed: set[str] = set()
    declared: set[str] = set()
    try:
        call = stub.ServerReflectionInfo(iter(requests), timeout=UNARY_TIMEOUT_S)
        async for resp in call:
            if resp.HasField("error_response"):
                return failed(f"reflection error: {resp.error_response.error_message}")
            listed |= {s.name for s in resp.list_services_response.service}
            for raw in resp.file_descriptor_response.file_descriptor_proto:
                fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
                declared |= {f"{fd.package}.{s.name}" for s in fd.service}
    except grpc.aio.AioRpcError as exc:
        return failed(f"reflection failed: {exc.code().name} {exc.details()}")
    missing = [s for s in wanted if s not in listed]
    if missing:
        return failed(f"reflection does not list {', '.join(missing)}")
    undeclared = [s for s in streaming if s not in declared]
    if undeclared:
        return failed(f"no file descriptor declares {', '.join(undeclared)}")
    return passed(f"lists {len(listed)} services incl. the contract's; descriptors served")


@probe("stt_formats")
async def stt_formats(ctx: ProbeContext) -> Verdict:
    """Every advertised input format of the model is accepted and counted right."""
    return await _each_format(
        ctx, _stt_steps, {"first": "started", "last": "summary"}, ("summary_audio",)
    )


@probe("tts_formats")
async def tts_formats(ctx: ProbeContext) -> Verdict:
    """Every advertised output format of the model produces whole frames that tile."""
    return await _each_format(ctx, _tts_steps, {"done": ("a",)}, ("audio_tiling",))


def _stt_steps(fmt: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    return ({"config": {"audio_format": dict(fmt)}}, {"audio": {"source": "tone", "ms": 300}})


def _tts_steps(fmt: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    return ({"open": {"output_format": dict(fmt)}}, {"append": "Hello there."}, {"close": True})


async def _each_format(
    ctx: ProbeContext,
    steps: Callable[[Mapping[str, Any]], tuple[dict[str, Any], ...]],
    expect: Mapping[str, Any],
    properties: tuple[str, ...],
) -> Verdict:
    if ctx.model is None:
        return failed("no model to probe")
    formats = every_format(ctx.model)
    cases = []
    for fmt in formats:
        spec = {"encoding": encoding_name(fmt.encoding), "rate": fmt.rate, "channels": fmt.channels}
        cases.append(
            dataclasses.replace(
                ctx.case,
                id=f"{ctx.case.id}[{fmt}]",
                probe="",
                steps=steps(spec),
                expect=Expect(properties=properties, **expect),
                half_close="now",
            )
        )
    verdicts = await asyncio.gather(*(ctx.run_case(c, ctx.model, True) for c in cases))
    for fmt, verdict in zip(formats, verdicts, strict=True):
        if not verdict.ok:
            return failed(f"{fmt}: {verdict.evidence} ({len(formats)} advertised)")
    return passed(f"{ctx.model.name}: all {len(formats)} advertised formats work")


@dataclass(frozen=True, slots=True)
class _Isolation:
    """A healthy stream, and streams that fail meanwhile (with their reason)."""

    healthy: tuple[dict[str, Any], ...]
    expect: Expect
    failing: tuple[tuple[tuple[dict[str, Any], ...], str], ...]


# docs/contract.md, Errors: "A failing stream never affects another".
_ISOLATION = {
    "transcription": _Isolation(
        healthy=(
            {"config": {}},
            {"wait": "started"},
            {"audio": {"source": "speech", "part": "head"}},
            {"gate": True},
            {"audio": {"source": "speech", "part": "tail"}},
        ),
        expect=Expect(last="summary"),
        failing=(
            (({"config": {"model": "no-such-model"}},), "UNKNOWN_MODEL"),
            (({"config": {}}, {"empty": True}), "INVALID_MESSAGE"),
            (({"audio": {"bytes": 320}},), "CONFIG_REQUIRED"),
        ),
    ),
    "synthesis": _Isolation(
        healthy=(
            {"open": {}},
            {"wait": "opened"},
            {"append": "Hello there. "},
            {"gate": True},
            {"append": "How are you?"},
            {"close": True},
        ),
        expect=Expect(done=("a",), last="summary"),
        failing=(
            (({"empty": True},), "INVALID_MESSAGE"),
            (({"open": {}, "context": ""},), "INVALID_MESSAGE"),
        ),
    ),
}


@probe("stream_isolation")
async def stream_isolation(ctx: ProbeContext) -> Verdict:
    """A stream goes on, unaffected, while other streams fail around it."""
    if ctx.model is None:
        return failed("no model to probe")
    plan = _ISOLATION[ctx.case.service]
    base = dataclasses.replace(ctx.case, probe="")
    healthy = dataclasses.replace(
        base, id=f"{base.id}[healthy]", steps=plan.healthy, expect=plan.expect, half_close="now"
    )
    others = [
        dataclasses.replace(
            base,
            id=f"{base.id}[{reason}]",
            steps=steps,
            expect=Expect(status=contract_row(reason).code.name, reason=reason),
            half_close="settle",
        )
        for steps, reason in plan.failing
        for _ in range(2)
    ]
    # Not through the run's slots: the point is that these streams overlap. The healthy stream
    # is open and half sent when the others start, and sends the rest once they have all ended.
    # They are the model's only streams from the kit, and no more than it admits: beside other
    # cases' streams, on a model that admits four, the healthy one was refused OVERLOADED.
    async with ctx.whole_model(ctx.model) as admits:
        if admits:
            others = others[: max(1, admits - 1)]
        gate = Gate(asyncio.Event(), asyncio.Event())
        healthy_run = asyncio.create_task(ctx.run_case(healthy, ctx.model, False, gate))
        reached = asyncio.create_task(gate.reached.wait())
        try:
            await asyncio.wait(
                {healthy_run, reached},
                timeout=UNARY_TIMEOUT_S,
                return_when=asyncio.FIRST_COMPLETED,
            )
            await asyncio.gather(*(ctx.run_case(c, ctx.model, False) for c in others))
        finally:
            reached.cancel()
            gate.go.set()
        verdict = await healthy_run
    if not verdict.ok:
        return failed(f"after {len(others)} streams failed, the healthy one: {verdict.evidence}")
    return passed(f"a stream ended well after {len(others)} streams failed around it")


# A break between words (a model may join breaks that touch), and one a model is likely to take:
# SSML leaves the longest break to the implementation, and 5 s is within every vendor's cap.
_UNIT_BREAK = 'a<break time="5s"/>'
_UNIT_BREAK_MS = 5_000
_UNIT_OVERSHOOT_MS = 30_000  # the document's audio, past the limit


@probe("tts_unit_audio")
async def tts_unit_audio(ctx: ProbeContext) -> Verdict:
    """A model that states ``max_unit_audio_ms`` stops an SSML unit whose audio runs past it
    with TEXT_TOO_LARGE, after the audio up to there (docs/contract.md, "Text format")."""
    if ctx.catalog is None:
        return failed("GetCapabilities failed: no model to run on")
    stating = [
        m
        for m in ctx.catalog.caps.models
        if m.kind == capabilities_pb2.MODEL_KIND_TTS
        and m.limits.max_unit_audio_ms
        and m.features.ssml
        and "break" in m.features.ssml_elements
    ]
    if not stating:
        raise Skip("no TTS model states max_unit_audio_ms and takes SSML <break>")
    model = stating[0]
    limit_ms = model.limits.max_unit_audio_ms
    breaks = (limit_ms + _UNIT_OVERSHOOT_MS) // _UNIT_BREAK_MS + 1
    document = "<speak>" + _UNIT_BREAK * breaks + "end</speak>"
    size = len(document.encode())
    limits = ctx.catalog.limits()
    room = [n for n in (model.limits.max_unit_text_bytes, limits["max_pending_text_bytes"]) if n]
    if room and size > min(room):
        # Else TEXT_TOO_LARGE would come for the text, not its audio.
        raise Skip(f"{model.name}: a document reaching {limit_ms} ms needs {size} bytes")
    chunk = limits["max_chunk_bytes"] or size
    appends = [{"append": document[i : i + chunk]} for i in range(0, size, chunk)]
    case = dataclasses.replace(
        ctx.case,
        id=f"{ctx.case.id}[{model.name}]",
        probe="",
        steps=(
            {"open": {"model": model.name, "text_format": "TEXT_FORMAT_SSML"}},
            *appends,
            {"close": True},
        ),
        expect=Expect(context_errors={"a": "TEXT_TOO_LARGE"}, properties=("unit_audio_capped",)),
        half_close="now",
    )
    verdict = await ctx.run_case(case, model, True)
    if not verdict.ok:
        return failed(f"{model.name}, {breaks} breaks of 5 s: {verdict.evidence}")
    return passed(f"{model.name}: {verdict.evidence}")
