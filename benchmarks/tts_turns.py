"""TTS turns: time to first audio of a new context, through the gateway and on the adapter direct.

A voice agent speaks turn after turn: each turn opens a context, appends its text and closes it,
and what the caller hears first is the turn's first audio. The gateway opens one upstream call
per context (docs/design/edge.md: each context's flow control is its own HTTP/2 stream), so its
turns pay a call set-up at the adapter that the record's TTS rows do not show on the adapter
direct (the load tester's gRPC target keeps one call per session); since the twelfth session
the gateway opens the next context's call ahead (a spare call). This benchmark times a turn four
ways, alternated turn by turn so the machine's drift falls on all of them:

- ``gateway``: one WebSocket session, a context per turn (binary audio, ``lead_ms=0``);
- ``gateway, no spare call``: the same through a second gateway process with
  ``[tts] spare_call_max_age_s = 0`` (every context opens its call when it opens);
- ``adapter, call per turn``: a new ``StreamingSynthesize`` call per context;
- ``adapter, one call``: every context on one long call.

Each turn sends open, append and close back to back, then waits for the context's end; its
figures are ``opened`` (the context's acknowledgement) and ``first audio``, from the first send.
One turn at a time: latency of an idle stack, not load.

    python -m benchmarks.tts_turns [--turns 300] [--model bench_tts] [--json out/bench/turns.json]

Starts its own Triton, adapter and the two gateways (each a process of its own, on loopback).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc

from voxwire.edge.messages import decode, encode
from voxwire.edge.v1 import tts_pb2
from voxwire.v1 import audio_pb2, synthesis_pb2, synthesis_pb2_grpc

TEXT = "Hello there, how are you today."
# The gateways measured: label, config name, [tts] table. The second opens no call ahead, so
# the two rows show what the spare call buys (gateway/tts/runner.py, "Spare call").
GATEWAYS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("gateway", "gateway", {}),
    ("gateway, no spare call", "gateway-no-spare", {"spare_call_max_age_s": 0}),
)
_R = synthesis_pb2.StreamingSynthesizeRequest
_M = tts_pb2.TtsClientMessage
_ENDS = ("done", "error", "cancelled")
# A turn that takes longer than this is an error of the stack under test, not a sample.
TURN_TIMEOUT_S = 10.0

Turn = Callable[[str], Awaitable[tuple[float, float]]]


def config(model: str) -> synthesis_pb2.SynthesisContextConfig:
    fmt = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=16000)
    return synthesis_pb2.SynthesisContextConfig(model=model, output_format=fmt)


def _requests(cid: str, cfg: synthesis_pb2.SynthesisContextConfig) -> list[Any]:
    return [
        _R(context_id=cid, open=cfg),
        _R(context_id=cid, append=synthesis_pb2.AppendText(text=TEXT)),
        _R(context_id=cid, close=synthesis_pb2.CloseContext()),
    ]


def gateway_turns(ws: aiohttp.ClientWebSocketResponse, cfg: Any) -> Turn:
    async def turn(cid: str) -> tuple[float, float]:
        t0 = time.monotonic()
        opened = first = 0.0
        for message in (
            _M(context_id=cid, open=cfg),
            _M(context_id=cid, append=synthesis_pb2.AppendText(text=TEXT)),
            _M(context_id=cid, close=synthesis_pb2.CloseContext()),
        ):
            await ws.send_str(encode(message))
        while True:
            frame = await ws.receive()
            if frame.type is aiohttp.WSMsgType.BINARY:
                first = first or time.monotonic() - t0
                continue
            if frame.type is not aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"the gateway ended the session: {frame!r}")
            msg = decode(frame.data, tts_pb2.TtsServerMessage, max_bytes=1 << 20)
            kind = msg.WhichOneof("message")
            if kind == "opened":
                opened = opened or time.monotonic() - t0
            elif kind in _ENDS and msg.context_id == cid:
                if kind != "done" or not first:
                    raise RuntimeError(f"turn {cid} ended without audio: {frame.data[:200]}")
                return opened, first

    return turn


async def _grpc_turn(
    call: Any, cid: str, cfg: Any, t0: float, *, own_call: bool
) -> tuple[float, float]:
    """One turn on ``call``: a call of its own (half-closed, read to its status) or the long
    call every turn shares (read until this context's end)."""
    opened = first = 0.0
    for request in _requests(cid, cfg):
        await call.write(request)
    if own_call:
        await call.done_writing()
    while (resp := await call.read()) is not grpc.aio.EOF:
        kind = resp.WhichOneof("response")
        if kind == "opened":
            opened = opened or time.monotonic() - t0
        elif kind == "audio":
            first = first or time.monotonic() - t0
        elif kind in _ENDS and resp.context_id == cid:
            if kind != "done" or not first:
                raise RuntimeError(f"turn {cid} ended without audio: {resp}")
            if not own_call:
                return opened, first
    if not own_call:
        raise RuntimeError("the long call ended")
    if await call.code() != grpc.StatusCode.OK or not first:
        raise RuntimeError(f"turn {cid}: {await call.code()} {await call.details()}")
    return opened, first


def call_per_turn(stub: synthesis_pb2_grpc.SynthesisStub, cfg: Any) -> Turn:
    async def turn(cid: str) -> tuple[float, float]:
        t0 = time.monotonic()
        return await _grpc_turn(stub.StreamingSynthesize(), cid, cfg, t0, own_call=True)

    return turn


def one_call(call: Any, cfg: Any) -> Turn:
    async def turn(cid: str) -> tuple[float, float]:
        return await _grpc_turn(call, cid, cfg, time.monotonic(), own_call=False)

    return turn


async def measure(
    adapter: str,
    gateways: dict[str, tuple[str, str]],
    *,
    turns: int,
    model: str = "bench_tts",
) -> dict[str, list[tuple[float, float]]]:
    """``turns`` turns on each path: every gateway of ``gateways`` (label -> (ws://host:port,
    API key)), then the adapter with a call per turn and on one call, alternated (the order
    rotates each turn); per path, the (opened, first audio) seconds of every turn. Raises
    RuntimeError when a turn fails."""
    cfg = config(model)
    async with (
        aiohttp.ClientSession() as http,
        grpc.aio.insecure_channel(adapter) as channel,
    ):
        sockets = [
            await http.ws_connect(
                f"{url}/v1/tts/stream?audio=binary&lead_ms=0",
                headers={"Authorization": f"Bearer {key}"},
                compress=0,
            )
            for url, key in gateways.values()
        ]
        stub = synthesis_pb2_grpc.SynthesisStub(channel)
        long_call = stub.StreamingSynthesize()
        paths = {label: gateway_turns(ws, cfg) for label, ws in zip(gateways, sockets, strict=True)}
        paths["adapter, call per turn"] = call_per_turn(stub, cfg)
        paths["adapter, one call"] = one_call(long_call, cfg)
        names = list(paths)
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
        try:
            for i in range(turns):
                for j in range(len(names)):
                    name = names[(i + j) % len(names)]
                    async with asyncio.timeout(TURN_TIMEOUT_S):
                        results[name].append(await paths[name](f"t{i}"))
                    await asyncio.sleep(0.02)  # the stack idle again before the next turn
        finally:
            long_call.cancel()
            for ws in sockets:
                await ws.close()
    return results


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(results: dict[str, list[tuple[float, float]]]) -> list[str]:
    lines = []
    for name, turns in results.items():
        opened = [o * 1000 for o, _ in turns]
        first = [f * 1000 for _, f in turns]
        lines.append(
            f"{name:24s} turns {len(turns):4d}  opened p50 {_pct(opened, 0.5):6.2f} ms  "
            f"first audio p50 {_pct(first, 0.5):6.2f}  p90 {_pct(first, 0.9):6.2f}  "
            f"p99 {_pct(first, 0.99):6.2f} ms"
        )
    return lines


async def run(args: argparse.Namespace) -> None:
    from benchmarks.gateway_stack import gateway_process, gateway_setup
    from benchmarks.stack import adapter_process
    from localstack.triton import TritonServer, default_model_repository

    workdir = Path(tempfile.mkdtemp(prefix="voxwire-tts-turns-"))
    triton = TritonServer(default_model_repository(), models=[args.model])
    await triton.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            _, listen = await stack.enter_async_context(
                adapter_process(
                    triton.grpc_url, workdir / "adapter.log", services=("voxwire.v1.Synthesis",)
                )
            )
            gateways = {}
            for label, name, tts in GATEWAYS:
                setup = gateway_setup(workdir, [listen], name=name, tts=tts)
                _, port = await stack.enter_async_context(
                    gateway_process(setup, workdir / f"{name}.log")
                )
                gateways[label] = (f"ws://127.0.0.1:{port}", setup.key)
            results = await measure(listen, gateways, turns=args.turns, model=args.model)
    finally:
        await triton.stop()
    for line in summary(results):
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=300, help="turns per path")
    parser.add_argument("--model", default="bench_tts")
    parser.add_argument("--json", type=Path)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
