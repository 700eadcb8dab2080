"""A short run of the wire fuzzer (issue 8) against a real Triton and the adapter.

300 reproducible streams (seed 8), 24 at a time, valid ones beside hostile ones, through
``voxwire.fuzz`` exactly as ``make fuzz`` runs it, on the benchmark models. A Triton of its
own (``explicit_triton``) and an adapter of its own: a run that brings Triton down must not
take the session's Triton with it. Asserts the invariants of the issue: no crash, every
stream a status, every non-OK status a reason, no valid stream disturbed, Triton alive with
every sequence slot free and nothing pending, and on the adapter's side no open stream, lease
or task left over.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from gateway.stt.session import SttLimits
from gateway.tts.session import TtsLimits
from inference_adapter.config import AdapterConfig, Limits
from inference_adapter.server import AdapterServer
from localstack.triton import TritonServer
from tests.helpers.edge import auth_config, roomy_key
from tests.helpers.speech_fixtures import SPEECH_DIR
from voxwire.fuzz.cases import read_audio
from voxwire.fuzz.report import Report
from voxwire.fuzz.runner import Options, fuzz

pytestmark = pytest.mark.timeout(300)


@dataclass(frozen=True)
class Stack:
    triton: TritonServer
    adapter: AdapterServer


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(explicit_triton: TritonServer) -> AsyncIterator[Stack]:
    triton = explicit_triton
    adapter = AdapterServer(
        AdapterConfig(
            listen="127.0.0.1:0",
            triton_urls=(triton.grpc_url,),
            limits=Limits(idle_timeout_seconds=10.0),
        )
    )
    await adapter.start()
    try:
        yield Stack(triton, adapter)
    finally:
        await adapter.stop(grace=1.0)


def short_run(
    target: str, triton: TritonServer, *, seed: int, headers: tuple[tuple[str, str], ...] = ()
) -> Options:
    """300 streams, 24 at a time, on the benchmark models, with Triton's readings wired up."""
    audio, rate = read_audio(SPEECH_DIR / "kitchen_lights.wav")
    return Options(
        target=target,
        cases=300,
        concurrency=24,
        seed=seed,
        stt_models=("bench_stt",),
        tts_models=("bench_tts",),
        audio=audio,
        audio_rate_hz=rate,
        status_timeout_s=20.0,
        warmup=0,
        settle_s=10.0,
        triton=triton.grpc_url,
        triton_metrics=f"127.0.0.1:{triton.ports.metrics}",
        headers=headers,
        progress=False,
    )


def _grpc_internal(task: asyncio.Task) -> bool:
    """A task of grpc.aio's own (its servers' accept loops and call handlers, its clients'
    request and status tasks), not one of the gateway's or the adapter's."""
    code = getattr(task.get_coro(), "cr_code", None)
    name = getattr(task.get_coro(), "__qualname__", "")
    where = code.co_filename if code is not None else ""
    return "/grpc/" in where or "cygrpc" in where or name.startswith(("AioServer.", "_AioCall."))


def _request_poller(task: asyncio.Task) -> bool:
    """grpc.aio's task consuming a client stream's request iterator."""
    name = getattr(task.get_coro(), "__qualname__", "")
    return name.endswith("_consume_request_iterator")


def _ours(task: asyncio.Task) -> bool:
    return not _grpc_internal(task)


async def _settled_tasks(
    baseline: int, within_s: float, counted: Callable[[asyncio.Task], bool] = lambda _: True
) -> list[asyncio.Task]:
    """The ``counted`` tasks alive on this loop, once back at ``baseline`` or after
    ``within_s`` (a transient one, a replica probe in flight, say, has its time to end)."""
    deadline = time.monotonic() + within_s
    while True:
        alive = [t for t in asyncio.all_tasks() if counted(t)]
        if len(alive) <= baseline or time.monotonic() >= deadline:
            return alive
        await asyncio.sleep(0.2)  # polling a count: there is no event to wait for


async def test_short_wire_fuzz_run_keeps_every_invariant(stack: Stack) -> None:
    triton, adapter = stack.triton, stack.adapter
    baseline_tasks = len(asyncio.all_tasks())
    report: Report = await fuzz(short_run(adapter.address, triton, seed=8))
    failed = [f"{i.name}: {i.value}" for i in report.invariants if i.ok is False]
    assert report.meta["cases"] == 300
    assert not failed, f"{failed}; examples: {report.examples}"
    # The adapter's own books, read in-process: nothing open, nothing held, no task left.
    assert adapter.runtime.active_streams == 0
    assert sum(r.active for r in adapter.pool.replicas) == 0
    left = await _settled_tasks(baseline_tasks, 10.0)
    assert len(left) <= baseline_tasks, "\n".join(repr(t) for t in left)


async def test_short_wire_fuzz_run_through_the_gateways_front_keeps_every_invariant(
    stack: Stack, tmp_path: Path
) -> None:
    """The same run through a gateway's gRPC front (``make fuzz-front`` in small), which parses
    every stream into the WebSocket's sessions and so meets the hostile input first: the same
    invariants, the adapter behind it left clean, and the gateway holding no session after."""
    triton, adapter = stack.triton, stack.adapter
    keys = tmp_path / "keys.toml"
    key = roomy_key(keys, "fuzz")
    idle = {"idle_timeout_s": 10.0, "idle_warning_s": 2.0}
    gateway = GatewayServer(
        GatewayConfig(
            listen="127.0.0.1:0",
            grpc_listen="127.0.0.1:0",
            adapters=(adapter.address,),
            auth=auth_config(keys),
            stt=SttLimits(**idle),
            tts=TtsLimits(**idle),
        )
    )
    await gateway.start()
    baseline_tasks = len([t for t in asyncio.all_tasks() if _ours(t)])
    try:
        headers = (("authorization", f"Bearer {key}"),)
        report: Report = await fuzz(
            short_run(gateway.grpc_address, triton, seed=9, headers=headers)
        )
        failed = [f"{i.name}: {i.value}" for i in report.invariants if i.ok is False]
        assert not failed, f"{failed}; examples: {report.examples}"
        assert all(a.serving for a in gateway.pool.adapters)  # no stream took the adapter out
        async with asyncio.timeout(5):
            await gateway.registry.wait_empty()
        # No task of the gateway's calls left behind (a request read left in flight ends with
        # its call); grpc.aio's own (its accept loops, the fuzzer's client calls) are not ours.
        ours = await _settled_tasks(baseline_tasks, 10.0, _ours)
        assert len(ours) <= baseline_tasks, "\n".join(repr(t) for t in ours)
        # Nor of the fuzzer's own calls: with the key sent by client interceptors, grpc.aio
        # fed each stream's writes through a request iterator whose consuming task a cut or
        # cancelled stream left pending, and the tool printed hundreds of asyncio warnings at
        # its exit (voxwire/call_headers.py).
        pollers = [t for t in asyncio.all_tasks() if _request_poller(t)]
        assert not pollers, f"{len(pollers)} request iterator tasks left: {pollers[:3]}"
    finally:
        await gateway.stop(grace=1.0)
    assert adapter.runtime.active_streams == 0
    assert sum(r.active for r in adapter.pool.replicas) == 0
