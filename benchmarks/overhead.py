"""Per-message overhead of the inference adapter, measured side by side in one run.

At each ``--streams`` level every stream sends 100 ms chunks of 16 kHz PCM16 (3200 bytes),
paced at real time from a random offset within the first 100 ms, over four paths:
(a) echo floor: a raw grpc.aio bidi echo (bytes in, same bytes out) in its own process;
(b) Triton direct: one ``bench_stt`` sequence per ``ModelStreamInfer`` call; latency from
    writing a request to reading its response with ``triton_final_response``;
(b') null proxy (floor): the same requests through ``benchmarks.null_proxy``, a uvloop
    grpc.aio server that passes raw bytes to Triton and back: the least any Python adapter
    does, so its distance from (b) is what a hop pair costs here;
(c) adapter: ``voxwire.v1.Transcription/StreamingTranscribe`` on the adapter (its own process)
    in front of the same Triton; latency from writing a chunk to reading its interim result.
The first second of each stream is warm-up. Also TTS time to first audio (``bench_tts``),
direct and through the adapter, and each process's CPU time per message (/proc/<pid>/stat).
The load client is this one asyncio process; it shares the cores with the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import itertools
import json
import math
import os
import platform
import random
import resource
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2_grpc

from benchmarks.echo_server import ECHO_METHOD
from inference_adapter.triton.tensors import parse_response, stt_request, tts_request
from localstack.triton import TritonServer, default_model_repository
from voxwire.v1 import audio_pb2, synthesis_pb2, synthesis_pb2_grpc
from voxwire.v1 import transcription_pb2 as stt_pb2
from voxwire.v1 import transcription_pb2_grpc as stt_grpc

CHUNK_S = 0.1
RATE_HZ = 16_000
WARMUP_S = 1.0
IDLE_S = 5.0  # background CPU of the idle servers is measured over this long
STEP_TIMEOUT_S = 10.0  # any single read or write
OPEN_TIMEOUT_S = 30.0  # opening or closing one stream, one TTS request, a server start
CALL_TIMEOUT_S = 600.0  # gRPC deadline of every benchmark call
STT_MODEL, TTS_MODEL = "bench_stt", "bench_tts"
TTS_TEXT = "The quick brown fox jumps over the lazy dog."
TTS_CONFIG = {"voice": "tone", "language": "en-US", "text_format": "plain"}
PCM = np.random.default_rng(7).integers(-2000, 2000, RATE_HZ // 10).astype("<i2")
PCM_BYTES = PCM.tobytes()  # 3200 bytes: 100 ms
EMPTY = np.zeros(0, dtype=np.int16)
LOOPBACK = "127.0.0.1"
PCM16 = audio_pb2.AUDIO_ENCODING_PCM_S16LE


async def _read(call: Any) -> Any | None:
    """The next message of a call, None at its end."""
    message = await asyncio.wait_for(call.read(), STEP_TIMEOUT_S)
    return None if message is grpc.aio.EOF else message


async def _write(call: Any, message: Any) -> None:
    await asyncio.wait_for(call.write(message), STEP_TIMEOUT_S)


# -- the three kinds of STT stream ------------------------------------------------------------


class Stream:
    """One bidi call: ``open`` (handshake), ``send`` chunk i, ``receive`` -> the index of the
    chunk a message answers (-1: another message; None: the call ended), ``close``."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.answers = itertools.count()  # answers of an in-order stream: chunk 0, 1, ...

    async def open(self) -> None: ...
    async def send(self) -> None: ...
    async def receive(self) -> int | None: ...

    async def close(self) -> None:
        await asyncio.wait_for(self.call.done_writing(), STEP_TIMEOUT_S)
        while await _read(self.call) is not None:
            pass

    def cancel(self) -> None:
        self.call.cancel()


class EchoStream(Stream):
    def __init__(self, channel: grpc.aio.Channel) -> None:
        # No serializers given: bytes go out and come back as they are.
        super().__init__(channel.stream_stream(ECHO_METHOD)())

    async def open(self) -> None:
        await _write(self.call, b"hello")
        if await _read(self.call) is None:
            raise RuntimeError("echo stream ended at open")

    async def send(self) -> None:
        await _write(self.call, PCM_BYTES)

    async def receive(self) -> int | None:
        return None if await _read(self.call) is None else next(self.answers)


class TritonStream(Stream):
    """One bench_stt sequence; Triton answers the requests of a sequence in order."""

    def __init__(self, stub: service_pb2_grpc.GRPCInferenceServiceStub, sequence_id: int) -> None:
        super().__init__(stub.ModelStreamInfer(timeout=CALL_TIMEOUT_S))
        self.seq = sequence_id

    async def _request(self, audio: np.ndarray, **kwargs: Any) -> None:
        await _write(self.call, stt_request(STT_MODEL, self.seq, audio, **kwargs))

    async def _until_final(self) -> None:
        while (message := await _read(self.call)) is not None:
            if parse_response(message).final:
                return
        raise RuntimeError("Triton ended the stream before a final response")

    async def open(self) -> None:
        await self._request(EMPTY, control={"config": {"interim_results": True}}, start=True)
        await self._until_final()

    async def send(self) -> None:
        await self._request(PCM)

    async def receive(self) -> int | None:
        if (message := await _read(self.call)) is None:
            return None
        return next(self.answers) if parse_response(message).final else -1

    async def close(self) -> None:
        await self._request(EMPTY, end=True)
        await self._until_final()
        await super().close()


class AdapterStream(Stream):
    def __init__(self, channel: grpc.aio.Channel) -> None:
        super().__init__(
            stt_grpc.TranscriptionStub(channel).StreamingTranscribe(timeout=CALL_TIMEOUT_S)
        )

    async def open(self) -> None:
        fmt = audio_pb2.AudioFormat(encoding=PCM16, sample_rate_hz=RATE_HZ, channels=1)
        config = stt_pb2.TranscriptionConfig(
            model=STT_MODEL, audio_format=fmt, interim_results=True
        )
        await _write(self.call, stt_pb2.StreamingTranscribeRequest(config=config))
        while (message := await _read(self.call)) is not None:
            if message.HasField("started"):
                return
        raise RuntimeError("the adapter ended the stream before `started`")

    async def send(self) -> None:
        await _write(self.call, stt_pb2.StreamingTranscribeRequest(audio=PCM_BYTES))

    async def receive(self) -> int | None:
        if (message := await _read(self.call)) is None:
            return None
        if message.WhichOneof("response") == "result" and not message.result.is_final:
            # bench_stt answers each audio request with one interim, end_ms = audio so far.
            return round(message.result.end_ms / (CHUNK_S * 1000)) - 1
        return -1


# -- measuring --------------------------------------------------------------------------------

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
Pids = Callable[[], list[int]]


def _stat(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()  # fields 3 (state) onwards; comm may hold spaces


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Triton runs a stub process per model instance)."""
    kids: list[str] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids += (task / "children").read_text().split()
    return [pid, *(p for kid in kids for p in process_tree(int(kid)))]


def cpu_snapshot(procs: dict[str, Pids]) -> dict[str, float]:
    """CPU seconds (utime + stime) per named process group and of this client; "_busy" and
    "_steal": the machine's (/proc/stat; user+nice+system+irq+softirq, and steal)."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    busy = (ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]) * _TICK_S
    out = {"_busy": busy, "_steal": ticks[7] * _TICK_S, "_wall": time.monotonic()}
    for name, pids in procs.items():
        out[name] = 0.0
        for pid in pids():
            with contextlib.suppress(OSError):
                fields = _stat(pid)
                out[name] += (int(fields[11]) + int(fields[12])) * _TICK_S
    own = resource.getrusage(resource.RUSAGE_SELF)
    out["client"] = own.ru_utime + own.ru_stime
    return out


def usage(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    """CPU µs per message per process group; in % of the machine: its busy and steal time,
    and "_other", busy time not spent by the processes measured (other load: noise)."""
    ours = {k: after[k] - before[k] for k in before if k[0] != "_"}
    out = {k: seconds * 1e6 / max(n, 1) for k, seconds in ours.items()}
    cores = (after["_wall"] - before["_wall"]) * (os.cpu_count() or 1) / 100
    out |= {k: (after[k] - before[k]) / cores for k in ("_busy", "_steal")}
    out["_other"] = out["_busy"] - sum(ours.values()) / cores
    return out


@dataclass
class Stats:
    count: int
    p50: float
    p90: float
    p99: float
    max: float
    lost: int
    errors: list[str]

    @classmethod
    def of(cls, ms: list[float], lost: int, errors: list[str]) -> Stats:
        if not ms:
            return cls(0, math.nan, math.nan, math.nan, math.nan, lost, errors)
        p50, p90, p99 = np.percentile(ms, [50, 90, 99]).tolist()
        return cls(len(ms), p50, p90, p99, max(ms), lost, errors)


@dataclass
class Measured:
    stats: Stats
    ms: list[float]
    messages: int  # messages (STT chunks, TTS requests) during the CPU window
    cpu_us: dict[str, float]  # CPU µs per message per process group; _busy, _steal in %


async def _pace(stream: Stream, sent: list[float], got: list[float], start_at: float) -> None:
    """Send len(sent) chunks paced at real time; timestamp each chunk and its answer."""

    async def writer() -> None:
        for i in range(len(sent)):
            await asyncio.sleep(max(0.0, start_at + i * CHUNK_S - time.monotonic()))
            sent[i] = time.perf_counter()
            await stream.send()

    async def reader() -> None:
        left = len(got)
        while left:
            index = await stream.receive()
            now = time.perf_counter()
            if index is None:
                raise RuntimeError(f"stream ended with {left} chunks unanswered")
            if 0 <= index < len(got) and math.isnan(got[index]):
                got[index] = now
                left -= 1

    tasks = [asyncio.create_task(writer()), asyncio.create_task(reader())]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_stt(
    make: Callable[[], Stream], streams: int, seconds: float, procs: dict[str, Pids]
) -> Measured:
    """Open ``streams`` streams, pace them for ``seconds``, close them."""
    n = round(seconds / CHUNK_S)
    all_streams = [make() for _ in range(streams)]
    sent = [[math.nan] * n for _ in all_streams]
    got = [[math.nan] * n for _ in all_streams]
    opened = await asyncio.gather(
        *(asyncio.wait_for(s.open(), OPEN_TIMEOUT_S) for s in all_streams), return_exceptions=True
    )
    errors = [f"open: {o!r}" for o in opened if isinstance(o, BaseException)]
    live = [i for i, o in enumerate(opened) if not isinstance(o, BaseException)]
    start = time.monotonic() + 0.2  # each stream starts at a random offset within 100 ms
    starts = {i: start + random.uniform(0, CHUNK_S) for i in live}
    before = cpu_snapshot(procs)
    pacing = [_pace(all_streams[i], sent[i], got[i], starts[i]) for i in live]
    paced = await asyncio.wait_for(
        asyncio.gather(*pacing, return_exceptions=True), seconds + 2 * OPEN_TIMEOUT_S
    )
    after = cpu_snapshot(procs)
    ok = [i for i, p in zip(live, paced, strict=True) if not isinstance(p, BaseException)]
    errors += [f"stream: {p!r}" for p in paced if isinstance(p, BaseException)]
    closed = await asyncio.gather(
        *(asyncio.wait_for(all_streams[i].close(), OPEN_TIMEOUT_S) for i in ok),
        return_exceptions=True,
    )
    errors += [f"close: {c!r}" for c in closed if isinstance(c, BaseException)]
    for stream in all_streams:
        stream.cancel()
    warm = round(WARMUP_S / CHUNK_S)
    pairs = [
        p for ss, gg in zip(sent, got, strict=True) for p in list(zip(ss, gg, strict=True))[warm:]
    ]
    ms = [(g - s) * 1000 for s, g in pairs if not math.isnan(g)]
    messages = sum(1 for ss in sent for s in ss if not math.isnan(s))
    stats = Stats.of(ms, len(pairs) - len(ms), errors)
    return Measured(stats, ms, messages, usage(before, after, messages))


async def tts_direct(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> float:
    """ms from opening a ModelStreamInfer call to its first response with audio."""
    began, first = time.perf_counter(), math.nan
    call = stub.ModelStreamInfer(timeout=CALL_TIMEOUT_S)
    try:
        await _write(call, tts_request(TTS_MODEL, TTS_TEXT, TTS_CONFIG))
        while (message := await _read(call)) is not None:
            response = parse_response(message)
            if math.isnan(first) and response.audio is not None and response.audio.size:
                first = (time.perf_counter() - began) * 1000
            if response.final:
                break
        await Stream(call).close()
    finally:
        call.cancel()
    return first


async def tts_adapter(channel: grpc.aio.Channel) -> float:
    """ms from opening a StreamingSynthesize call (open + append + close) to its first audio."""
    request = synthesis_pb2.StreamingSynthesizeRequest
    fmt = audio_pb2.AudioFormat(encoding=PCM16, sample_rate_hz=24000)
    config = synthesis_pb2.SynthesisContextConfig(model=TTS_MODEL, output_format=fmt)
    began, first = time.perf_counter(), math.nan
    call = synthesis_pb2_grpc.SynthesisStub(channel).StreamingSynthesize(timeout=CALL_TIMEOUT_S)
    try:
        await _write(call, request(context_id="c", open=config))
        await _write(call, request(context_id="c", append=synthesis_pb2.AppendText(text=TTS_TEXT)))
        await _write(call, request(context_id="c", close=synthesis_pb2.CloseContext()))
        await asyncio.wait_for(call.done_writing(), STEP_TIMEOUT_S)
        while (message := await _read(call)) is not None:
            kind = message.WhichOneof("response")
            if kind == "audio" and math.isnan(first):
                first = (time.perf_counter() - began) * 1000
            elif kind == "error":
                raise RuntimeError(f"context error: {message.error.error.message}")
    finally:
        call.cancel()
    return first


async def run_tts(
    once: Callable[[], Awaitable[float]], streams: int, requests: int, procs: dict[str, Pids]
) -> Measured:
    """``streams`` workers, each making its share of ``requests`` one after another."""
    for _ in range(3):  # warm-up, not counted
        await asyncio.wait_for(once(), OPEN_TIMEOUT_S)
    per_worker = math.ceil(requests / streams)
    results: list[float] = []
    errors: list[str] = []

    async def worker() -> None:
        await asyncio.sleep(random.uniform(0, CHUNK_S))
        for _ in range(per_worker):
            try:
                results.append(await asyncio.wait_for(once(), OPEN_TIMEOUT_S))
            except Exception as exc:
                errors.append(repr(exc))

    before = cpu_snapshot(procs)
    await asyncio.gather(*(worker() for _ in range(streams)))
    after = cpu_snapshot(procs)
    ms = [r for r in results if not math.isnan(r)]
    n = per_worker * streams
    return Measured(Stats.of(ms, len(results) - len(ms), errors), ms, n, usage(before, after, n))


# -- server processes -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def server_process(
    args: list[str], logfile: Path, port_on_stdout: bool = False
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """``python -m <args>`` with its output in ``logfile``; yields (process, stdout's first
    line when ``port_on_stdout``). SIGTERM (then SIGKILL) on exit."""
    with logfile.open("ab") as out:
        stdout = asyncio.subprocess.PIPE if port_on_stdout else out
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", *args, stdout=stdout, stderr=out, stdin=asyncio.subprocess.DEVNULL
        )
    try:
        line = b""
        if proc.stdout is not None:
            line = await asyncio.wait_for(proc.stdout.readline(), OPEN_TIMEOUT_S)
        yield proc, line.decode().strip()
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 5)


async def wait_serving(address: str, proc: asyncio.subprocess.Process, services: list[str]) -> None:
    """Poll grpc.health.v1 Check until every service is SERVING. Raises RuntimeError."""
    deadline = time.monotonic() + OPEN_TIMEOUT_S
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while services:
            if proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the adapter did not serve {services} in time")
            with contextlib.suppress(grpc.aio.AioRpcError):
                request = health_pb2.HealthCheckRequest(service=services[0])
                reply = await health.Check(request, timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    services = services[1:]
                    continue
            await asyncio.sleep(0.2)


# -- report -----------------------------------------------------------------------------------


def _f(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def table(title: str, rows: dict[str, Stats], diffs: list[tuple[str, str]]) -> str:
    lines = [f"### {title}", "", "| path | count | p50 | p90 | p99 | max | lost / errors |"]
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for name, s in rows.items():
        cells = [s.count, _f(s.p50), _f(s.p90), _f(s.p99), _f(s.max), f"{s.lost} / {len(s.errors)}"]
        lines.append(f"| {name} | " + " | ".join(map(str, cells)) + " |")
    for a, b in diffs:
        x, y = rows[a], rows[b]
        d50, d90, d99 = x.p50 - y.p50, x.p90 - y.p90, x.p99 - y.p99
        lines.append(f"| *{a} − {b}* | | **{d50:+.2f}** | {d90:+.2f} | **{d99:+.2f}** | | |")
    errors = [e for s in rows.values() for e in s.errors]
    if errors:
        lines += ["", f"{len(errors)} errors; first: `{errors[0][:300]}`"]
    return "\n".join(lines) + "\n"


def cpu_table(rows: list[tuple[str, Measured]]) -> str:
    names = ["echo server", "null proxy", "triton", "adapter", "client"]
    lines = [
        "### CPU time per message (µs; utime + stime over the measured phase)",
        "",
        "| scenario | messages | " + " | ".join(names) + " | machine busy | other load | steal |",
        "|---|---:|" + "---:|" * (len(names) + 3),
    ]
    for label, m in rows:
        cells = [f"{m.cpu_us[n]:.0f}" if n in m.cpu_us else "" for n in names]
        cells += [f"{m.cpu_us[k]:.0f} %" for k in ("_busy", "_other")]
        cells.append(f"{m.cpu_us['_steal']:.1f} %")
        lines.append(f"| {label} | {m.messages or '-'} | " + " | ".join(cells) + " |")
    lines.append(
        "\nThe idle row is CPU µs per second with no load. Machine busy, other load (busy time "
        "of processes outside the row, e.g. an idle server or another job: noise) and steal are "
        f"% of all cores. /proc counts CPU in {_TICK_S * 1000:.0f} ms ticks, so rows with few "
        "messages are coarse."
    )
    return "\n".join(lines) + "\n"


# -- the run ----------------------------------------------------------------------------------


def _header(args: argparse.Namespace) -> list[str]:
    cmd = shlex.join(["python", "-m", "benchmarks.overhead", *sys.argv[1:]])
    return [
        "## voxwire overhead benchmark",
        "",
        f"- command: `{cmd}`",
        f"- date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}",
        f"- grpcio {grpc.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}, nproc {os.cpu_count()}",
        f"- STT: {args.seconds:g} s per scenario, 100 ms chunks (3200 B) paced at real time, "
        f"the first {WARMUP_S:g} s of each stream skipped; latency per message in ms",
        "- the load client is one asyncio process; it, the echo server, the null proxy, Triton "
        "and the adapter share the same cores",
        "",
    ]


async def main(args: argparse.Namespace) -> None:
    random.seed(args.seed)
    header = _header(args)
    out: list[str] = []
    runs: list[tuple[str, Measured]] = []
    workdir = Path(tempfile.mkdtemp(prefix="voxwire-bench-"))
    print(f"logs under {workdir}; starting Triton", file=sys.stderr, flush=True)
    triton = TritonServer(default_model_repository(), models=[STT_MODEL, TTS_MODEL])
    await triton.start()
    listen = f"{LOOPBACK}:{_free_port()}"
    limits = ["--drain-grace-seconds", "2"]
    adapter = ["inference_adapter", "--listen", listen, "--triton-url", triton.grpc_url, *limits]
    echo = ["benchmarks.echo_server"]
    proxy = ["benchmarks.null_proxy", triton.grpc_url]
    try:
        async with (
            server_process(echo, workdir / "echo.log", True) as (echo_proc, echo_port),
            server_process(proxy, workdir / "proxy.log", True) as (proxy_proc, proxy_port),
            server_process(adapter, workdir / "adapter.log") as (adapter_proc, _),
            grpc.aio.insecure_channel(f"{LOOPBACK}:{echo_port}") as echo_channel,
            grpc.aio.insecure_channel(triton.grpc_url) as triton_channel,
            grpc.aio.insecure_channel(f"{LOOPBACK}:{proxy_port}") as proxy_channel,
            grpc.aio.insecure_channel(listen) as adapter_channel,
        ):
            services = ["voxwire.v1.Transcription", "voxwire.v1.Synthesis"]
            await wait_serving(listen, adapter_proc, services)
            triton_pids: Pids = lambda: process_tree(triton.pid or 0)  # noqa: E731
            procs: dict[str, dict[str, Pids]] = {
                "echo": {"echo server": lambda: [echo_proc.pid]},
                "direct": {"triton": triton_pids},
                "proxy": {"null proxy": lambda: [proxy_proc.pid], "triton": triton_pids},
                "adapter": {"adapter": lambda: [adapter_proc.pid], "triton": triton_pids},
            }
            servers = procs["echo"] | procs["proxy"] | procs["adapter"]
            before = cpu_snapshot(servers)
            await asyncio.sleep(IDLE_S)
            idle = usage(before, cpu_snapshot(servers), round(IDLE_S))
            runs.append(("idle, per second", Measured(Stats.of([], 0, []), [], 0, idle)))

            async def measure(label: str, run: Awaitable[Measured]) -> Stats:
                print(label, file=sys.stderr, flush=True)
                runs.append((label, await run))
                return runs[-1][1].stats

            stub = service_pb2_grpc.GRPCInferenceServiceStub(triton_channel)
            proxy_stub = service_pb2_grpc.GRPCInferenceServiceStub(proxy_channel)
            sequence_ids = itertools.count(random.getrandbits(40) << 20)
            stt: dict[str, Callable[[], Stream]] = {
                "echo (floor)": lambda: EchoStream(echo_channel),
                "Triton direct": lambda: TritonStream(stub, next(sequence_ids)),
                "null proxy (floor)": lambda: TritonStream(proxy_stub, next(sequence_ids)),
                "adapter": lambda: AdapterStream(adapter_channel),
            }
            kinds = dict(zip(stt, procs, strict=True))  # path -> the processes it runs
            for n in args.streams:
                rows = {
                    path: await measure(
                        f"STT {path}, {n} streams",
                        run_stt(make, n, args.seconds, procs[kinds[path]]),
                    )
                    for path, make in stt.items()
                }
                title = f"STT, {n} paced stream{'s' * (n > 1)}: latency per 100 ms chunk (ms)"
                pairs = [
                    ("adapter", "Triton direct"),
                    ("null proxy (floor)", "Triton direct"),
                    ("adapter", "null proxy (floor)"),
                    ("Triton direct", "echo (floor)"),
                ]
                out.append(table(title, rows, pairs))
            tts: dict[str, Callable[[], Awaitable[float]]] = {
                "Triton direct": lambda: tts_direct(stub),
                "adapter": lambda: tts_adapter(adapter_channel),
            }
            for n in args.tts_streams:
                rows = {
                    path: await measure(
                        f"TTS {path}, {n} concurrent (per request)",
                        run_tts(once, n, args.tts_requests, procs[kinds[path]]),
                    )
                    for path, once in tts.items()
                }
                title = f"TTS time to first audio, {n} concurrent, {args.tts_requests} requests"
                out.append(table(title + " (ms)", rows, [("adapter", "Triton direct")]))
    finally:
        await triton.stop()
    print("\n".join([*header, *out, cpu_table(runs)]))
    if args.json:
        raw = {"header": header, "runs": [{"label": k, **asdict(m)} for k, m in runs]}
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(raw, indent=1))
    shutil.rmtree(workdir, ignore_errors=True)  # kept when the run failed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="paced time per scenario")
    parser.add_argument("--streams", type=_ints, default=[1, 100], help="STT streams, e.g. 1,100")
    parser.add_argument("--tts-streams", type=_ints, default=[1, 20], help="TTS concurrency")
    parser.add_argument("--tts-requests", type=int, default=40, help="TTS requests per level")
    parser.add_argument("--json", help="also write the raw figures (every latency) here")
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
