"""The fuzz run: discover the target, run the cases many at a time, then look for leaks.

``fuzz(options)`` returns a ``Report`` (voxwire.fuzz.report). Order of a run:

1. ``GetCapabilities``: the models to use (benchmark models are used only when named).
2. Warm-up cases, then the baseline: the adapter's gauges and RSS, Triton's pending requests,
   the log's length.
3. The cases, ``concurrency`` at a time, each with its own deadline; valid streams run beside
   hostile ones (the families are mixed by weight, see voxwire.fuzz.cases).
4. Settle: wait (bounded) until the adapter's open-stream gauge is back at its baseline.
5. After: the same readings again, and Triton's sequence slots probed for every STT model used.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from voxwire import call_headers
from voxwire.capabilities import takes_input
from voxwire.fuzz import probes
from voxwire.fuzz.cases import FAMILIES, Plan, make_case, tone
from voxwire.fuzz.client import Outcome, run_case
from voxwire.fuzz.report import Readings, Report
from voxwire.v1 import audio_pb2, capabilities_pb2, capabilities_pb2_grpc

# Room for the hostile 5 MB messages on the client side (the server sets its own limit).
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]
# Adapter gauges the fuzzer understands (the adapter's OpenTelemetry names, Prometheus form).
STREAMS_GAUGE = "voxwire_streams_active"
TASKS_GAUGE = "voxwire_asyncio_tasks"
TASKS_BY_KIND_GAUGE = "voxwire_asyncio_tasks_by_kind"
TRITON_CALLS = "voxwire_triton_calls_total"
TRITON_CANCELS = "voxwire_triton_cancels_total"


@dataclass
class Options:
    target: str
    cases: int = 1000
    concurrency: int = 32
    seed: int = 1
    only_case: int | None = None
    stt_models: tuple[str, ...] = ()
    tts_models: tuple[str, ...] = ()
    families: tuple[str, ...] = FAMILIES
    audio: bytes = b""
    audio_rate_hz: int = 16000
    status_timeout_s: float = 30.0
    channels: int = 4
    warmup: int = -1  # -1: min(200, cases // 50)
    settle_s: float = 15.0
    triton: str = ""
    triton_metrics: str = ""
    adapter_metrics: str = ""
    adapter_log: Path | None = None
    pid: int | None = None
    rss_slack_mb: float = 64.0
    headers: tuple[tuple[str, str], ...] = ()  # metadata of every call (e.g. authorization)
    progress: bool = True
    # (cases done, seconds into the phase) when Triton was first seen down; set by the run.
    triton_down_at: tuple[int, float] | None = None


async def discover(channel: grpc.aio.Channel, opts: Options) -> Plan:
    """The plan from the target's Capabilities: the named models, or every non-benchmark one.

    Raises grpc.aio.AioRpcError when the target does not answer; ValueError when it offers no
    model to fuzz."""
    stub = capabilities_pb2_grpc.CapabilitiesStub(channel)
    caps = await stub.GetCapabilities(capabilities_pb2.GetCapabilitiesRequest(), timeout=10.0)
    stt = [m for m in caps.models if m.kind == capabilities_pb2.MODEL_KIND_STT]
    tts = [m for m in caps.models if m.kind == capabilities_pb2.MODEL_KIND_TTS]
    stt_names = opts.stt_models or tuple(m.name for m in stt if not m.benchmark)
    tts_names = opts.tts_models or tuple(m.name for m in tts if not m.benchmark)
    if not stt_names and not tts_names:
        raise ValueError("the target offers no model to fuzz")
    said = {m.name: m for m in stt}
    f32 = audio_pb2.AUDIO_ENCODING_PCM_F32LE
    return Plan(
        stt_models=tuple(stt_names),
        tts_models=tuple(tts_names),
        tts_rates={m.name: m.native_sample_rate_hz for m in tts},
        audio=opts.audio or tone(opts.audio_rate_hz),
        audio_rate_hz=opts.audio_rate_hz,
        families=opts.families,
        # A model the capabilities do not list (named with --stt-models) is taken at the
        # reference adapter's: interim results, float audio.
        interim_models=frozenset(
            n for n in stt_names if n not in said or said[n].features.interim_results
        ),
        f32_models=tuple(
            n for n in stt_names if n not in said or takes_input(said[n], f32, 16000, 1)
        ),
    )


async def read(opts: Options, plan: Plan) -> Readings:
    """One reading of everything the options point at (what is not given stays None)."""
    r = Readings(at=time.monotonic())
    if opts.adapter_metrics:
        with contextlib.suppress(OSError, TimeoutError):
            samples = await probes.scrape(opts.adapter_metrics)
            r.streams = probes.total(samples, STREAMS_GAUGE)
            if any(k.startswith(TASKS_GAUGE) for k in samples):
                r.tasks = probes.total(samples, TASKS_GAUGE)
            kinds = probes.by_label(samples, TASKS_BY_KIND_GAUGE, "kind")
            if kinds:
                r.task_kinds = kinds
            r.triton_calls = probes.by_label(samples, TRITON_CALLS, "ended")
            r.triton_cancels = probes.by_label(samples, TRITON_CANCELS, "why")
    if opts.pid:
        with contextlib.suppress(OSError):
            r.rss = probes.rss_bytes(opts.pid)
    if opts.triton_metrics:
        with contextlib.suppress(OSError, TimeoutError):
            samples = await probes.scrape(opts.triton_metrics)
            r.triton_pending = probes.pending_requests(
                samples, (*plan.stt_models, *plan.tts_models)
            )
    if opts.adapter_log and opts.adapter_log.is_file():
        r.log_size = opts.adapter_log.stat().st_size
    return r


async def _run_many(
    channels: list[grpc.aio.Channel], opts: Options, plan: Plan, indices: range
) -> tuple[list[Outcome], int]:
    """Run ``indices``, ``concurrency`` at a time. Returns the outcomes and the peak RSS seen."""
    outcomes: list[Outcome] = []
    it = iter(indices)
    peak_rss = [0]
    t0 = time.monotonic()
    tick = 0

    async def worker(w: int) -> None:
        for index in it:
            case = make_case(opts.seed, index, plan)
            if case.ending == "disconnect":
                channel = call_headers.channel(opts.target, opts.headers, _CHANNEL_OPTIONS)
                own = True
            else:
                channel, own = channels[w % len(channels)], False
            outcomes.append(
                await run_case(
                    channel, case, status_timeout_s=opts.status_timeout_s, own_channel=own
                )
            )

    async def monitor() -> None:
        nonlocal tick
        while True:
            await asyncio.sleep(2.0)
            tick += 1
            if opts.triton and opts.triton_down_at is None and tick % 5 == 0:
                if not await probes.triton_ready(opts.triton):
                    # The model server died under the load: everything after is moot.
                    opts.triton_down_at = (indices.start + len(outcomes), time.monotonic() - t0)
            if opts.pid:
                with contextlib.suppress(OSError):
                    peak_rss[0] = max(peak_rss[0], probes.rss_bytes(opts.pid))
            if opts.progress:
                rate = len(outcomes) / max(1e-6, time.monotonic() - t0)
                print(
                    f"\r{len(outcomes)}/{len(indices)} cases, {rate:.0f}/s",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )

    watch = asyncio.create_task(monitor())
    try:
        await asyncio.gather(*(worker(w) for w in range(opts.concurrency)))
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
    if opts.progress:
        print(file=sys.stderr)
    return outcomes, peak_rss[0]


async def _settle(opts: Options, plan: Plan, baseline: Readings) -> Readings:
    """Wait until the adapter's open streams and tasks are back at the baseline (bounded)."""
    deadline = time.monotonic() + opts.settle_s
    while True:
        now = await read(opts, plan)
        back = (now.streams is None or now.streams <= (baseline.streams or 0)) and (
            now.tasks is None or baseline.tasks is None or now.tasks <= baseline.tasks
        )
        if back or time.monotonic() >= deadline:
            return now
        await asyncio.sleep(0.5)


async def fuzz(opts: Options) -> Report:
    """Run the whole fuzz session. Raises grpc.aio.AioRpcError when the target is down."""
    channels = [
        call_headers.channel(opts.target, opts.headers, _CHANNEL_OPTIONS)
        for _ in range(max(1, opts.channels))
    ]
    try:
        plan = await discover(channels[0], opts)
        if opts.only_case is not None:
            single = range(opts.only_case, opts.only_case + 1)
            outcomes, _ = await _run_many(channels, opts, plan, single)
            return Report.build(opts, plan, outcomes, None, None, [], 0.0)
        warmup = opts.warmup if opts.warmup >= 0 else min(200, opts.cases // 50)
        start = await read(opts, plan)
        outcomes, _ = await _run_many(channels, opts, plan, range(warmup))
        baseline = await _settle(opts, plan, await read(opts, plan))
        baseline.log_size = start.log_size  # the log is read from the very start
        t0 = time.monotonic()
        more, peak = await _run_many(channels, opts, plan, range(warmup, opts.cases))
        outcomes += more
        elapsed = time.monotonic() - t0
        baseline.peak_rss = peak
        after = await _settle(opts, plan, baseline)
        slots = []
        if opts.triton:
            after.triton_ready = await probes.triton_ready(opts.triton)
            for model in plan.stt_models if after.triton_ready else ():
                with contextlib.suppress(grpc.aio.AioRpcError):
                    slots.append(await probes.probe_slots(opts.triton, model))
        return Report.build(opts, plan, outcomes, baseline, after, slots, elapsed)
    finally:
        for channel in channels:
            await channel.close()
