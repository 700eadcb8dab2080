"""Barge-in on a phone call: how far the SDK's idea of what the caller heard is from the truth.

``examples/twilio_agent.py`` answers each sentence of a caller; the caller's third sentence
starts while the second answer plays, and ``TwilioCall`` clears Twilio's buffer and reports the
reply's played position from Twilio's mark echoes (docs/design/telephony.md). Twilio is
``tests/helpers/fake_twilio.FakeTwilio`` (Twilio cannot run here): it plays what it is sent at
real time behind a network delay each way, and records exactly what it played when the clear
arrived. Each call gives one (estimate - truth) in ms; calls vary the one-way delay and where the
barge-in lands (the silence before the third sentence).

    python -m benchmarks.twilio_barge_in [--repeats 2] [--json out/bench/twilio_barge_in.json]

Starts its own Triton (stt_pocketsphinx, tts_espeak), adapter and gateway (each a process of its
own, on loopback); two calls at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from examples.twilio_agent import make_app
from tests.helpers.fake_twilio import MULAW_SILENCE, FakeTwilio
from voxwire.client.twilio import CallEvent, ReplyInterrupted

TELEPHONY = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "speech" / "telephony"
ONE_WAY_MS = (0, 25, 50, 100)
GAPS_S = (1.0, 1.3, 1.6)
BYTES_PER_MS = 8


def _mulaw(name: str) -> bytes:
    return (TELEPHONY / f"{name}.mulaw").read_bytes()


async def one_call(gateway: str, key: str, one_way_ms: int, gap_s: float) -> dict[str, Any]:
    events: list[CallEvent] = []
    app = make_app([gateway], key, on_event=events.append)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"ws://127.0.0.1:{runner.addresses[0][1]}/media"
    silence = MULAW_SILENCE * int(8000 * 5.0)
    caller = (
        _mulaw("call_me_back")
        + silence
        + _mulaw("pay_bill")
        + MULAW_SILENCE * int(8000 * gap_s)
        + _mulaw("account_balance")
    )
    twilio = FakeTwilio(url, caller, tail_s=4.5, one_way_s=one_way_ms / 1000)
    try:
        await twilio.run(timeout_s=90)
    finally:
        await runner.cleanup()
    cut = [e for e in events if isinstance(e, ReplyInterrupted)]
    row: dict[str, Any] = {"one_way_ms": one_way_ms, "gap_s": gap_s}
    if len(cut) != 1 or len(twilio.clears) != 1 or len(twilio.starts) < 2:
        row["error"] = f"{len(cut)} interrupted, {len(twilio.clears)} clears"
        return row
    truth = (twilio.clears[0].played_bytes - twilio.starts[1][1]) / BYTES_PER_MS
    row.update(
        estimate_ms=cut[0].played_ms,
        truth_ms=truth,
        error_ms=cut[0].played_ms - truth,
        heard=" ".join(w.word for w in cut[0].heard),
    )
    return row


async def measure(gateway: str, key: str, repeats: int) -> list[dict[str, Any]]:
    plan = [(ms, gap) for _ in range(repeats) for ms in ONE_WAY_MS for gap in GAPS_S]
    rows: list[dict[str, Any]] = []
    for i in range(0, len(plan), 2):  # two calls at a time: stt_pocketsphinx admits four
        batch = plan[i : i + 2]
        rows += await asyncio.gather(*(one_call(gateway, key, ms, g) for ms, g in batch))
        print(rows[-len(batch) :], flush=True)
    return rows


def summary(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| one-way delay | calls | estimate - truth: median | min | max |",
        "|---:|---:|---:|---:|---:|",
    ]
    for ms in ONE_WAY_MS:
        errs = [r["error_ms"] for r in rows if r["one_way_ms"] == ms and "error_ms" in r]
        failed = sum(1 for r in rows if r["one_way_ms"] == ms and "error" in r)
        if errs:
            lines.append(
                f"| {ms} ms | {len(errs)}{f' (+{failed} failed)' if failed else ''} | "
                f"{statistics.median(errs):+.0f} ms | {min(errs):+.0f} | {max(errs):+.0f} |"
            )
    return lines


async def run(args: argparse.Namespace) -> None:
    from benchmarks.gateway_stack import gateway_process, gateway_setup
    from benchmarks.stack import adapter_process
    from localstack.triton import TritonServer, default_model_repository

    workdir = Path(tempfile.mkdtemp(prefix="voxwire-twilio-"))
    triton = TritonServer(default_model_repository(), models=["stt_pocketsphinx", "tts_espeak"])
    await triton.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            _, listen = await stack.enter_async_context(
                adapter_process(triton.grpc_url, workdir / "adapter.log")
            )
            setup = gateway_setup(workdir, [listen])
            _, port = await stack.enter_async_context(
                gateway_process(setup, workdir / "gateway.log")
            )
            rows = await measure(f"ws://127.0.0.1:{port}", setup.key, args.repeats)
    finally:
        await triton.stop()
    for line in summary(rows):
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="calls per delay and gap")
    parser.add_argument("--json", type=Path)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
