"""``python -m voxwire.fuzz --target host:port``: the voxwire.v1 wire fuzzer (issue 8).

Runs ``--cases`` reproducible streams (``--seed``), ``--concurrency`` at a time, against any
voxwire.v1 server: valid streams beside malformed, mutated and hostile ones (see
voxwire.fuzz.cases). Prints the summary tables, writes ``--json``, and exits 1 when an
invariant fails (voxwire.fuzz.report), 2 when the target cannot be reached.

``--case N`` runs only case N of the seed (a reproduction). Leak checks take what is given:
``--adapter-metrics host:port`` (Prometheus: open streams, asyncio tasks), ``--pid`` (RSS),
``--adapter-log`` (asyncio warnings, tracebacks), ``--triton host:port`` (sequence slot probe)
and ``--triton-metrics host:port`` (pending requests).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import grpc

from voxwire.call_headers import parse_header
from voxwire.fuzz.cases import FAMILIES, read_audio
from voxwire.fuzz.runner import Options, fuzz


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m voxwire.fuzz",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--target", required=True, help="voxwire.v1 server host:port")
    p.add_argument("--cases", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--case", type=int, dest="only_case", help="run only this case of the seed")
    p.add_argument(
        "--stt-models",
        type=_csv,
        default=(),
        help="comma-separated (default: all non-benchmark STT models of the target)",
    )
    p.add_argument("--tts-models", type=_csv, default=())
    p.add_argument(
        "--families",
        type=_csv,
        default=FAMILIES,
        help=f"comma-separated subset of {','.join(FAMILIES)}",
    )
    p.add_argument(
        "--audio", type=Path, help="16-bit mono WAV for valid STT streams (default: a tone)"
    )
    p.add_argument(
        "--status-timeout",
        type=float,
        default=30.0,
        help="seconds a stream may take to get its status",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=15.0,
        help="seconds to wait for the adapter's gauges to come back after the run",
    )
    p.add_argument("--warmup", type=int, default=-1)
    p.add_argument("--triton", default="", help="Triton gRPC host:port (sequence slot probe)")
    p.add_argument("--triton-metrics", default="", help="Triton metrics host:port")
    p.add_argument("--adapter-metrics", default="", help="the target's Prometheus host:port")
    p.add_argument("--adapter-log", type=Path, help="the target's log file")
    p.add_argument("--pid", type=int, help="the target's process id (RSS)")
    p.add_argument("--rss-slack-mb", type=float, default=64.0)
    p.add_argument("--json", type=Path, help="write the report here")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument(
        "--header",
        action="append",
        default=[],
        help="'name: value' metadata on every call (repeatable), e.g. 'authorization: Bearer KEY'",
    )
    return p


def parse_args(argv: list[str] | None = None) -> tuple[Options, Path | None]:
    """The run's options and where to write the JSON report (argparse exits on bad flags)."""
    p = _parser()
    a = p.parse_args(argv)
    unknown = set(a.families) - set(FAMILIES)
    if unknown:
        p.error(f"unknown families: {sorted(unknown)}")
    audio, rate = read_audio(a.audio) if a.audio else (b"", 16000)
    try:
        headers = tuple(parse_header(h) for h in a.header)
    except ValueError as exc:
        p.error(str(exc))
    opts = Options(
        target=a.target,
        cases=a.cases,
        concurrency=a.concurrency,
        seed=a.seed,
        only_case=a.only_case,
        stt_models=a.stt_models,
        tts_models=a.tts_models,
        families=a.families,
        audio=audio,
        audio_rate_hz=rate,
        status_timeout_s=a.status_timeout,
        settle_s=a.settle,
        warmup=a.warmup,
        triton=a.triton,
        triton_metrics=a.triton_metrics,
        adapter_metrics=a.adapter_metrics,
        adapter_log=a.adapter_log,
        pid=a.pid,
        rss_slack_mb=a.rss_slack_mb,
        headers=headers,
        progress=not a.quiet,
    )
    return opts, a.json


def main(argv: list[str] | None = None) -> int:
    opts, json_path = parse_args(argv)
    try:
        report = asyncio.run(fuzz(opts))
    except (grpc.aio.AioRpcError, ValueError) as exc:
        print(f"cannot fuzz {opts.target}: {exc}", file=sys.stderr)
        return 2
    if json_path is not None:  # first: nothing in the printing can lose it
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(report.to_json())
    report.render()
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
