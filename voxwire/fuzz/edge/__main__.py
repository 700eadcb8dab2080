"""``python -m voxwire.fuzz.edge``: fuzz a gateway's WebSocket and HTTP endpoints.

    python -m voxwire.fuzz.edge --target http://127.0.0.1:8080 [--key KEY] --cases N
        [--concurrency C] [--seed S] [--json out.json] [--pid PID] [--log FILE]
        [--audio speech.wav] [--stt-model bench_stt] [--tts-model bench_tts]
    python -m voxwire.fuzz.edge --target ... --seed S --case N     # reproduce one case

The key comes from ``--key`` or ``VOXWIRE_API_KEY``. Exits 0 when every invariant holds, 1
otherwise. ``make fuzz-edge`` starts Triton, an adapter and a gateway and runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from voxwire.fuzz.cases import read_audio, tone
from voxwire.fuzz.edge.cases import FAMILIES
from voxwire.fuzz.edge.runner import Options, Result, fuzz


def parse_args(argv: list[str] | None = None) -> tuple[Options, Path | None]:
    parser = argparse.ArgumentParser(
        prog="python -m voxwire.fuzz.edge",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--target", required=True, help="the gateway, http://HOST:PORT")
    parser.add_argument("--key", default=os.environ.get("VOXWIRE_API_KEY", ""))
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--case", type=int, default=None, help="run only this case")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--stt-model", default="bench_stt")
    parser.add_argument("--tts-model", default="bench_tts")
    parser.add_argument("--audio", type=Path, default=None, help="speech, a 16-bit mono WAV")
    parser.add_argument("--deadline", type=float, default=30.0, help="seconds per case")
    parser.add_argument("--pid", type=int, default=None, help="the gateway's PID (RSS, alive)")
    parser.add_argument("--log", type=Path, default=None, help="the gateway's log file")
    parser.add_argument(
        "--peak-rss-mib",
        type=int,
        default=Options.peak_rss_limit // 2**20,
        help="the gateway's RSS while the cases run may not pass this (with --pid; the "
        "default is for 48 sessions at once)",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("a key is needed: --key or VOXWIRE_API_KEY")
    families = tuple(f for f in args.families.split(",") if f)
    unknown = set(families) - set(FAMILIES)
    if unknown:
        parser.error(f"unknown families: {sorted(unknown)} (known: {', '.join(FAMILIES)})")
    audio, rate = read_audio(args.audio) if args.audio else (tone(16000, 1.5), 16000)
    options = Options(
        target=args.target.rstrip("/"),
        key=args.key,
        cases=args.cases,
        concurrency=args.concurrency,
        seed=args.seed,
        only_case=args.case,
        families=families,
        stt_model=args.stt_model,
        tts_model=args.tts_model,
        audio=audio,
        audio_rate_hz=rate,
        deadline_s=args.deadline,
        pid=args.pid,
        log=args.log,
        peak_rss_limit=args.peak_rss_mib * 2**20,
    )
    return options, args.json


def render(result: Result) -> str:
    meta = result.meta
    lines = [
        f"edge fuzz: {meta['cases']} cases, {meta['concurrency']} at a time, seed {meta['seed']},"
        f" {meta['seconds']} s ({meta['cases_per_second']} cases/s)",
        *(
            [f"cases fitted to the STT model: {', '.join(f'{k} no' for k in unlike)}"]
            if (unlike := [k for k, yes in meta.get("stt_model", {}).items() if not yes])
            else []
        ),
        "verdicts: " + ", ".join(f"{k} {v}" for k, v in result.verdicts.items() if v),
        "by family:",
    ]
    for family, counts in result.by_family.items():
        lines.append(f"  {family:<13} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    lines.append("refusals: " + ", ".join(f"{k} {v}" for k, v in list(result.reasons.items())[:14]))
    lines.append("invariants:")
    for inv in result.invariants:
        mark = {True: "ok  ", False: "FAIL", None: "n/a "}[inv["ok"]]
        lines.append(f"  {mark} {inv['name']}: {inv['value']}")
    for verdict, cases in result.examples.items():
        lines.append(f"examples of {verdict}:")
        for case in cases:
            lines.append(
                f"  case {case['index']} ({case['family']}, {case['kind']}, "
                f"{case['detail']!r}): {case['why']}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    options, json_path = parse_args(argv)
    result = asyncio.run(fuzz(options))
    print(render(result))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(asdict(result), indent=1))
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
