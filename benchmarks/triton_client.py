"""The adapter's Triton client against tritonclient's stream client, with nothing else around them.

Issue 9's goal: *the adapter's Triton client costs at most a third of the CPU per message of
tritonclient's own stream client at 100 streams, with a lower p99.* The performance record
(``make bench``) reads it from the load tester's ``triton`` and ``tritonclient`` targets, and
there the tool's own work per message (pacing, HDR histograms, events, one worker's bookkeeping)
is in both figures. This instrument measures the clients themselves. Each kind runs in a process
of its own with the same minimal driver, and nothing else in the process:

- ``echo`` (the floor): a raw grpc.aio bidi call per stream to ``benchmarks/echo_server.py``,
  bytes of a Triton audio request's size each way. The least a Python gRPC client stream costs.
- ``grpclib_echo``: the same echo from grpclib (pure Python, on h2) instead of grpc.aio: whether
  another Python gRPC client stack gets under grpc.aio's floor (it does not: BENCHMARKS.md).
- ``adapter``: the adapter's own Triton client, the code the adapter runs per stream:
  ``ReplicaPool`` (its channels, readiness polling and admission), ``ModelStream`` (a deadline
  on every write, ``parse_response`` on every answer) and ``SequenceRequests`` (the requests as
  the adapter encodes them), on uvloop, no threads.
- ``tritonclient``: tritonclient's ``InferenceServerClient.start_stream`` per stream (its own
  channel and a reader thread that calls back), requests built with ``InferInput``, answers
  decoded in the callback (``get_response``, the EVENTS JSON).

The driver, the same for each: ``--streams`` STT sequences on ``bench_stt``, each started (START
with its config, answered) before the measured phase; then 100 ms chunks of PCM16 at real time
on an absolute schedule, staggered over one period, for ``--seconds``; then END. Latency per
message: from a chunk's scheduled send time to the answer that completes its request
(``triton_final_response``; the echo for the floor). CPU per message: the client process's
utime + stime (every thread) over the measured phase, divided by the chunks sent. Repeats
rotate the order of the kinds (ABCD, BCDA, ...). Triton's CPU over each run is reported beside it.

    python -m benchmarks.triton_client [--streams 100] [--seconds 15] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("echo", "grpclib_echo", "adapter", "tritonclient")
MODEL = "bench_stt"
CHUNK_MS = 100
RATE_HZ = 16000
# The bound on one run beyond its measured phase: start-up, the ends of the sequences.
RUN_SLACK_S = 60.0


@dataclass
class Driven:
    """What one stream's driver needs of a client kind."""

    send: Callable[[bytes], Awaitable[None]]  # one chunk of PCM16
    finish: Callable[[], Awaitable[None]]  # END, and wait for its answer (bounded)


class Recorder:
    """Scheduled send times in order, matched by the answers in order (one stream's requests
    are answered in order). Thread-safe enough for tritonclient's callback thread: a deque's
    append and popleft are atomic."""

    def __init__(self, latencies: list[float], measuring: threading.Event) -> None:
        self._sent: collections.deque[float | None] = collections.deque()
        self._latencies = latencies
        self._measuring = measuring
        self.requests = 0
        self.answered = 0
        self.errors: list[str] = []

    def sent(self, scheduled: float | None) -> None:
        self.requests += 1
        self._sent.append(scheduled)

    async def all_answered(self, within_s: float) -> None:
        deadline = time.monotonic() + within_s
        # Polled, not an asyncio.Event: tritonclient counts its answers in its own thread.
        while self.answered < self.requests and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    def failed(self, error: str) -> None:
        self.errors.append(error)
        self.answered_one()

    def answered_one(self) -> None:
        now = time.monotonic()
        self.answered += 1
        if self._sent:
            scheduled = self._sent.popleft()
            if scheduled is not None and self._measuring.is_set():
                self._latencies.append(now - scheduled)


# -- the kinds ------------------------------------------------------------------------------------


async def _echo_streams(
    address: str, n: int, recorders: list[Recorder]
) -> tuple[list[Driven], Callable[[], Awaitable[None]]]:
    import grpc

    from benchmarks.echo_server import ECHO_METHOD

    channels = [grpc.aio.insecure_channel(address) for _ in range(2)]
    # The bytes of one Triton audio request: the floor moves as many each way.
    payload = bytes(len(_adapter_request_size_probe()))
    driven = []
    readers: list[asyncio.Task[None]] = []
    for i in range(n):
        call = channels[i % 2].stream_stream(ECHO_METHOD)()
        rec = recorders[i]

        async def read(call: Any = call, rec: Recorder = rec) -> None:
            async for _ in call:
                rec.answered_one()

        readers.append(asyncio.create_task(read()))

        async def send(pcm: bytes, call: Any = call) -> None:
            await call.write(payload)

        async def finish(call: Any = call, rec: Recorder = rec) -> None:
            await call.done_writing()
            await rec.all_answered(10.0)

        driven.append(Driven(send, finish))

    async def close() -> None:
        await asyncio.wait(readers, timeout=5.0)
        for ch in channels:
            await ch.close()

    return driven, close


async def _grpclib_echo_streams(
    address: str, n: int, recorders: list[Recorder]
) -> tuple[list[Driven], Callable[[], Awaitable[None]]]:
    from grpclib.client import Channel
    from grpclib.const import Cardinality
    from grpclib.encoding.base import CodecBase

    from benchmarks.echo_server import ECHO_METHOD

    class Raw(CodecBase):
        __content_subtype__ = "proto"

        def encode(self, message: Any, message_type: Any) -> bytes:
            return bytes(message)

        def decode(self, data: bytes, message_type: Any) -> Any:
            return data

    host, port = address.rsplit(":", 1)
    channels = [Channel(host, int(port), codec=Raw()) for _ in range(2)]
    payload = bytes(len(_adapter_request_size_probe()))
    driven = []
    readers: list[asyncio.Task[None]] = []
    for i in range(n):
        # The codec passes bytes through; the message types are only what it is given.
        stream: Any = channels[i % 2].request(ECHO_METHOD, Cardinality.STREAM_STREAM, bytes, bytes)
        await stream.__aenter__()
        await stream.send_request()
        rec = recorders[i]

        async def read(stream: Any = stream, rec: Recorder = rec) -> None:
            while await stream.recv_message() is not None:
                rec.answered_one()

        readers.append(asyncio.create_task(read()))

        async def send(pcm: bytes, stream: Any = stream) -> None:
            await stream.send_message(payload)

        async def finish(stream: Any = stream, rec: Recorder = rec) -> None:
            await stream.end()
            await rec.all_answered(10.0)

        driven.append(Driven(send, finish))

    async def close() -> None:
        await asyncio.wait(readers, timeout=5.0)
        for ch in channels:
            ch.close()

    return driven, close


def _adapter_request_size_probe() -> bytes:
    from inference_adapter.triton.tensors import PCM16, SequenceRequests

    audio = np.zeros(RATE_HZ * CHUNK_MS // 1000, dtype=PCM16)
    return SequenceRequests(MODEL, (1 << 62) | 1, batched=False).encode(audio)


async def _adapter_streams(
    address: str, n: int, recorders: list[Recorder]
) -> tuple[list[Driven], Callable[[], Awaitable[None]]]:
    from inference_adapter.config import AdapterConfig
    from inference_adapter.triton.replicas import ReplicaPool
    from inference_adapter.triton.stream import ModelStream
    from inference_adapter.triton.tensors import PCM16, SequenceRequests
    from voxwire.errors import ModelError

    pool = ReplicaPool(AdapterConfig(triton_urls=(address,)))
    await pool.start()
    info = pool.catalog()[MODEL]
    empty = np.zeros(0, dtype=PCM16)
    driven = []
    readers: list[asyncio.Task[None]] = []
    for i in range(n):
        lease = pool.acquire(MODEL)
        stream = ModelStream(pool, lease, response_timeout=10.0)
        requests = SequenceRequests(info.name, random.getrandbits(62) | 1, batched=info.batched)
        rec = recorders[i]
        rec.sent(None)  # START: answered before the measured phase
        await stream.send(requests.encode(empty, {"config": {"interim_results": True}}, start=True))

        async def read(stream: Any = stream, rec: Recorder = rec) -> None:
            with contextlib.suppress(Exception):  # the call's end, after the half-close
                while True:
                    try:
                        response = await stream.receive(None)
                    except ModelError as exc:
                        rec.failed(str(exc))
                        continue
                    if response.final:
                        rec.answered_one()

        readers.append(asyncio.create_task(read()))

        async def send(pcm: bytes, stream: Any = stream, requests: Any = requests) -> None:
            # As the adapter's session does: the chunk's samples, then its request.
            await stream.send(requests.encode(np.frombuffer(pcm, dtype=PCM16)))

        async def finish(
            stream: Any = stream, requests: Any = requests, rec: Recorder = rec, lease: Any = lease
        ) -> None:
            rec.sent(None)
            await stream.send(requests.encode(empty, end=True))
            await rec.all_answered(10.0)
            await stream.half_close()  # then Triton ends the call; its reader sees the end
            lease.release()

        driven.append(Driven(send, finish))

    async def close() -> None:
        await asyncio.wait(readers, timeout=5.0)
        await pool.close()

    return driven, close


async def _tritonclient_streams(
    address: str, n: int, recorders: list[Recorder]
) -> tuple[list[Driven], Callable[[], Awaitable[None]]]:
    import grpc
    import tritonclient.grpc as tc
    from tritonclient.grpc import service_pb2_grpc

    from loadtest.targets.triton_requests import decode_infer, model_info

    async with grpc.aio.insecure_channel(address) as channel:
        info = await model_info(service_pb2_grpc.GRPCInferenceServiceStub(channel), MODEL)
    lead = [1] if info.batched else []
    loop = asyncio.get_running_loop()
    clients = []
    driven = []
    for i in range(n):
        client = tc.InferenceServerClient(address)
        rec = recorders[i]
        seq = random.getrandbits(62) | 1

        def callback(result: Any, error: Any, rec: Recorder = rec) -> None:
            # tritonclient's stream thread: decode the answer, as a user's callback would.
            if error is not None:
                rec.failed(str(error))
            elif decode_infer(result.get_response()).final:
                rec.answered_one()

        client.start_stream(callback=callback)
        clients.append(client)

        def infer(pcm: bytes, client: Any = client, seq: int = seq, **kw: Any) -> None:
            audio = tc.InferInput("AUDIO", [*lead, len(pcm) // 2], "INT16")
            audio.set_data_from_numpy(np.frombuffer(pcm, dtype="<i2").reshape([*lead, -1]))
            inputs = [audio]
            if "control" in kw:
                ctrl = tc.InferInput("CONTROL", [*lead, 1], "BYTES")
                value = np.array([json.dumps(kw.pop("control")).encode()], dtype=np.object_)
                ctrl.set_data_from_numpy(value.reshape([*lead, 1]))
                inputs.append(ctrl)
            # Queues the request for the stream's request iterator; does not block.
            client.async_stream_infer(
                MODEL, inputs, sequence_id=seq, enable_empty_final_response=True, **kw
            )

        rec.sent(None)
        infer(b"", control={"config": {"interim_results": True}}, sequence_start=True)

        async def send(pcm: bytes, infer: Any = infer) -> None:
            infer(pcm)

        async def finish(infer: Any = infer, rec: Recorder = rec) -> None:
            rec.sent(None)
            infer(b"", sequence_end=True)
            await rec.all_answered(10.0)

        driven.append(Driven(send, finish))

    async def close() -> None:
        def stop() -> None:
            for client in clients:
                client.stop_stream()  # every request is answered: a half-close, no cancel
                client.close()

        await loop.run_in_executor(None, stop)

    return driven, close


_KIND_STREAMS = {
    "echo": _echo_streams,
    "grpclib_echo": _grpclib_echo_streams,
    "adapter": _adapter_streams,
    "tritonclient": _tritonclient_streams,
}


# -- the worker: one kind in its own process -----------------------------------------------


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _paced(
    driven: Driven, rec: Recorder, offset: float, begin: float, end: float, sent: list[int]
) -> None:
    chunk = np.random.default_rng().integers(-3000, 3000, RATE_HZ * CHUNK_MS // 1000, "<i2")
    pcm = chunk.tobytes()
    period = CHUNK_MS / 1000
    k = 0
    while True:
        at = begin + offset + k * period
        if at >= end:
            return
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        rec.sent(at)
        await driven.send(pcm)
        sent[0] += 1
        k += 1


async def worker(kind: str, address: str, streams: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    measuring = threading.Event()
    recorders = [Recorder(latencies, measuring) for _ in range(streams)]
    driven, close = await _KIND_STREAMS[kind](address, streams, recorders)
    # Every START answered (the echoes have none) before the clock starts.
    deadline = time.monotonic() + 30.0
    while not kind.endswith("echo") and any(r.answered < 1 for r in recorders):
        if time.monotonic() > deadline:
            raise TimeoutError("the sequences did not start within 30 s")
        await asyncio.sleep(0.05)
    warmup = 1.0
    begin = time.monotonic() + 0.2
    end = begin + warmup + seconds
    sent = [0]
    period = CHUNK_MS / 1000
    pacers = [
        asyncio.create_task(_paced(d, r, period * i / streams, begin, end, sent))
        for i, (d, r) in enumerate(zip(driven, recorders, strict=True))
    ]
    await asyncio.sleep(max(0.0, begin + warmup - time.monotonic()))
    measuring.set()
    sent_before, cpu_before, t0 = sent[0], _cpu_s(), time.monotonic()
    await asyncio.gather(*pacers)
    cpu_after, t1 = _cpu_s(), time.monotonic()
    sent_measured = sent[0] - sent_before
    # Answers still in flight at the end count in the latencies, not in the CPU.
    await asyncio.sleep(0.5)
    measuring.clear()
    await asyncio.gather(*(d.finish() for d in driven), return_exceptions=True)
    await close()
    lat = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {
        "kind": kind,
        "streams": streams,
        "seconds": t1 - t0,
        "messages": sent_measured,
        "cpu_us_per_message": (cpu_after - cpu_before) / max(1, sent_measured) * 1e6,
        "samples": len(latencies),
        "p50_ms": float(np.percentile(lat, 50)),
        "p90_ms": float(np.percentile(lat, 90)),
        "p99_ms": float(np.percentile(lat, 99)),
        "p999_ms": float(np.percentile(lat, 99.9)) if len(latencies) >= 10_000 else None,
        "max_ms": float(lat.max()),
        "unanswered": sum(r.requests - r.answered for r in recorders),
        "errors": sum(len(r.errors) for r in recorders),
        "first_error": next((r.errors[0] for r in recorders if r.errors), None),
        "threads": threading.active_count(),
    }


def _worker_main(args: argparse.Namespace) -> None:
    import uvloop

    result = uvloop.run(worker(args.worker, args.address, args.streams, args.seconds))
    print(json.dumps(result), flush=True)


# -- the parent: Triton, the echo server, the rotated runs -----------------------------------------


async def _run_worker(
    kind: str,
    address: str,
    streams: int,
    seconds: float,
    triton_pids: Callable[[], list[int]],
    log: Path,
) -> dict[str, Any]:
    from benchmarks.stack import cpu_delta, cpu_snapshot

    argv = [
        sys.executable, "-m", "benchmarks.triton_client", "--worker", kind, "--address", address,
        "--streams", str(streams), "--seconds", str(seconds),
    ]  # fmt: skip
    before = cpu_snapshot({"triton": triton_pids})
    with log.open("ab") as errors:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=errors
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), seconds + RUN_SLACK_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"the {kind} worker did not end in time; see {log}") from None
    after = cpu_snapshot({"triton": triton_pids})
    if proc.returncode != 0:
        raise RuntimeError(f"the {kind} worker failed ({proc.returncode}); see {log}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    triton_s = cpu_delta(before, after).get("triton", 0.0)
    result["triton_cpu_us_per_message"] = triton_s / max(1, result["messages"]) * 1e6
    return result


async def parent(args: argparse.Namespace) -> list[dict[str, Any]]:
    from benchmarks.stack import LOOPBACK, process_tree, raise_nofile, server_process
    from localstack.triton import TritonServer, default_model_repository

    raise_nofile()
    kinds = [k for k in KINDS if k in args.kinds.split(",")]
    results: list[dict[str, Any]] = []
    workdir = Path(tempfile.mkdtemp(prefix="triton-client-"))
    triton = TritonServer(default_model_repository(), models=[MODEL])
    await triton.start()
    try:
        echo = server_process(["benchmarks.echo_server"], workdir / "echo.log", True)
        async with echo as (_, echo_port):
            echo_address = f"{LOOPBACK}:{echo_port}"
            tri = lambda: process_tree(triton.pid or 0)  # noqa: E731
            for repeat in range(args.repeats):
                order = kinds[repeat % len(kinds) :] + kinds[: repeat % len(kinds)]
                for kind in order:
                    address = echo_address if kind.endswith("echo") else triton.grpc_url
                    log = workdir / f"{kind}.log"
                    r = await _run_worker(kind, address, args.streams, args.seconds, tri, log)
                    r["repeat"] = repeat + 1
                    results.append(r)
                    print(
                        f"repeat {repeat + 1} {kind:>12}: client {r['cpu_us_per_message']:7.1f} "
                        f"us/msg, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms "
                        f"({r['samples']} samples), triton {r['triton_cpu_us_per_message']:.0f} "
                        f"us/msg, unanswered {r['unanswered']}, errors {r['errors']}, "
                        f"threads {r['threads']}",
                        flush=True,
                    )
    finally:
        await triton.stop()
    return results


def summary(results: list[dict[str, Any]]) -> list[str]:
    """The lines under the runs: each kind's range, and the ratios the goal reads."""
    by: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for r in results:
        by[r["kind"]].append(r)
    lines = [
        "| kind | client CPU µs/msg (per repeat) | p50 ms | p99 ms | samples |",
        "|---|---|---|---|---:|",
    ]
    for kind in KINDS:
        rs = by.get(kind)
        if not rs:
            continue
        cpus = ", ".join(f"{r['cpu_us_per_message']:.0f}" for r in rs)
        p50 = f"{min(r['p50_ms'] for r in rs):.2f}–{max(r['p50_ms'] for r in rs):.2f}"
        p99 = f"{min(r['p99_ms'] for r in rs):.2f}–{max(r['p99_ms'] for r in rs):.2f}"
        lines.append(f"| {kind} | {cpus} | {p50} | {p99} | {sum(r['samples'] for r in rs)} |")
    repeats = sorted({r["repeat"] for r in results})
    ratios, net = [], []
    for rep in repeats:
        cpu = {r["kind"]: r["cpu_us_per_message"] for r in results if r["repeat"] == rep}
        if "adapter" in cpu and "tritonclient" in cpu:
            ratios.append(cpu["tritonclient"] / cpu["adapter"])
            if "echo" in cpu and cpu["adapter"] > cpu["echo"]:
                net.append((cpu["tritonclient"] - cpu["echo"]) / (cpu["adapter"] - cpu["echo"]))
    if ratios:
        lines.append("")
        lines.append(
            "tritonclient / adapter client, CPU per message, per repeat: "
            + ", ".join(f"{x:.2f}×" for x in ratios)
        )
    if net:
        lines.append("the same net of the echo floor: " + ", ".join(f"{x:.2f}×" for x in net))
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--json", type=Path, default=Path("out/bench/triton_client.json"))
    parser.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.streams <= 1000 or not 0 < args.seconds <= 600:
        parser.error("--streams must be 1..1000 and --seconds 0..600")
    if args.worker:
        _worker_main(args)
        return
    import uvloop

    results = uvloop.run(parent(args))
    lines = summary(results)
    print("\n".join(lines))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "command": " ".join(
                    ["python -m benchmarks.triton_client", *(argv or sys.argv[1:])]
                ),
                "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "nproc": os.cpu_count(),
                "load_before": os.getloadavg(),
                "results": results,
                "summary": lines,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
