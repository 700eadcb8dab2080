"""The edge fuzz run: hostile and valid WebSocket sessions and HTTP requests, many at a time,
against a running gateway, then the readings that show whether anything was left behind.

Order: the gateway's ``/metrics`` (open sessions), RSS and log length before; the cases,
``concurrency`` at a time, valid ones beside hostile ones; a settle (bounded) until the open
sessions are back at the baseline; the same readings after; and one valid STT and one valid
TTS session that must still end normally (the process keeps serving everyone else).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from voxwire import errors
from voxwire.capabilities import find_model
from voxwire.fuzz import probes
from voxwire.fuzz.edge.cases import FAMILIES, Case, Plan, describe, make_case
from voxwire.fuzz.edge.client import Outcome, run_case
from voxwire.fuzz.edge.verdict import BAD, VERDICTS, judge
from voxwire.v1 import capabilities_pb2

log = logging.getLogger(__name__)

SESSIONS_GAUGE = "voxwire_gateway_sessions_active"


@dataclass
class Options:
    target: str  # http://host:port of the gateway
    key: str
    cases: int = 1000
    concurrency: int = 32
    seed: int = 1
    only_case: int | None = None
    families: tuple[str, ...] = FAMILIES
    stt_model: str = "bench_stt"
    tts_model: str = "bench_tts"
    audio: bytes = b""
    audio_rate_hz: int = 16000
    deadline_s: float = 30.0
    settle_s: float = 15.0
    pid: int | None = None
    log: Path | None = None
    # In the second half of the run: a gross leak only. RSS is a coarse reading here: glibc
    # keeps freed memory in its arenas (the upload decoders' threads have their own), and
    # four 20,000-case runs of the same gateway moved by -110 to +82 MiB in their second
    # half with Python's own memory flat (docs/fuzzing.md, "The edge").
    rss_growth_limit: int = 256 * 1024 * 1024
    # The most RSS may reach while the cases run (sampled every ``rss_every_s``): memory per
    # session is bounded whatever a client does, so 48 sessions at once have a ceiling. The
    # three readings above missed a 1 Hz WAV header's transient 250-400 MiB (a peak of 652 MiB
    # in a 60,000-case run before that fix, 230 MiB after; docs/fuzzing.md, "The edge").
    peak_rss_limit: int = 384 * 1024 * 1024
    rss_every_s: float = 0.2


@dataclass
class Readings:
    sessions: float | None = None
    rss: int | None = None
    log_size: int | None = None


@dataclass
class Result:
    meta: dict[str, Any]
    verdicts: dict[str, int]
    by_family: dict[str, dict[str, int]]
    reasons: dict[str, int]
    invariants: list[dict[str, Any]]
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(i["ok"] is not False for i in self.invariants)


def plan_of(
    options: Options, offered: capabilities_pb2.GetCapabilitiesResponse | None = None
) -> Plan:
    """The cases' plan; fitted to the STT model as ``offered`` (the target's capabilities)
    describes it, when it does."""
    model = None
    if offered is not None:
        model = find_model(offered, capabilities_pb2.MODEL_KIND_STT, options.stt_model)
    return Plan(
        stt_model=options.stt_model,
        tts_model=options.tts_model,
        audio=options.audio,
        audio_rate_hz=options.audio_rate_hz,
        families=options.families,
        encoded=compressed(options.audio[: options.audio_rate_hz * 2], options.audio_rate_hz),
        variants=variants(options.audio, options.audio_rate_hz),
        interim=model is None or model.features.interim_results,
    )


async def _offered(options: Options) -> capabilities_pb2.GetCapabilitiesResponse | None:
    """The target's capabilities; None when it does not give them (the cases then expect
    what the reference adapter's models do)."""
    from voxwire.client import fetch_capabilities

    try:
        return await fetch_capabilities(options.target, options.key, timeout_s=10.0)
    except errors.VoxwireError as exc:
        log.warning("the target's capabilities: %s; the cases assume the reference models", exc)
        return None


def variants(audio: bytes, rate: int) -> tuple[tuple[str, int, bytes], ...]:
    """``audio`` (PCM16 mono) as 8 kHz mu-law (a phone's) and 48 kHz float (a browser's), for
    valid STT sessions: a model that does not take them gets them converted by the gateway."""
    from voxwire.audio.codecs import Encoding, PcmFormat
    from voxwire.audio.convert import FormatConverter

    pcm = audio[: len(audio) // 2 * 2]
    if not pcm:
        return ()
    out = []
    for encoding, to in ((Encoding.MULAW, 8000), (Encoding.PCM_F32LE, 48000)):
        converter = FormatConverter(PcmFormat(Encoding.PCM_S16LE, rate), PcmFormat(encoding, to))
        out.append((encoding.value, to, converter.convert(pcm) + converter.flush()))
    return tuple(out)


def compressed(audio: bytes, rate: int) -> tuple[tuple[str, bytes], ...]:
    """``audio`` (PCM16 mono) as FLAC, Ogg Vorbis and MP3 files, for the upload cases."""
    import numpy as np
    import soundfile  # libsndfile: only the runner encodes (the cases stay pure)

    if not audio:
        return ()
    pcm = np.frombuffer(audio[: len(audio) // 2 * 2], "<i2")
    out = []
    for ctype, fmt, subtype in (
        ("audio/flac", "FLAC", "PCM_16"),
        ("audio/ogg", "OGG", "VORBIS"),
        ("audio/mpeg", "MP3", "MPEG_LAYER_III"),
    ):
        file = io.BytesIO()
        soundfile.write(file, pcm, rate, format=fmt, subtype=subtype)
        out.append((ctype, file.getvalue()))
    return tuple(out)


async def _read(options: Options, hostport: str) -> Readings:
    out = Readings()
    with contextlib.suppress(OSError, TimeoutError, ValueError):
        out.sessions = probes.total(await probes.scrape(hostport), SESSIONS_GAUGE)
    if options.pid is not None:
        with contextlib.suppress(OSError):
            out.rss = probes.rss_bytes(options.pid)
    if options.log is not None and options.log.is_file():
        out.log_size = options.log.stat().st_size
    return out


async def fuzz(options: Options) -> Result:
    plan = plan_of(options, await _offered(options))
    hostport = urlsplit(options.target).netloc
    indices = [options.only_case] if options.only_case is not None else range(options.cases)
    cases = [make_case(options.seed, i, plan) for i in indices]
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        before = await _read(options, hostport)
        started = time.monotonic()
        # RSS is compared from after a warm-up (a tenth of the run, at most 500 cases): what
        # the first cases allocate for good (the allocator's arenas at this concurrency,
        # caches, imports) is no leak. Everything else counts from the start.
        # RSS: read after a warm-up (a tenth of the run, at most 500 cases), at the middle of
        # the rest and at the end. The allocator keeps what the busiest moment took (its
        # arenas at this concurrency), so the first half's growth is that high-water mark; a
        # leak grows with the cases, so it is the second half's growth that is bounded.
        warm = min(len(cases) // 10, 500)
        middle = warm + (len(cases) - warm) // 2
        rss: list[int | None] = []
        outcomes: list[Outcome] = []
        peak: list[int] = []
        sampler = asyncio.create_task(_sample_peak(options, peak)) if options.pid else None
        try:
            for part in (cases[:warm], cases[warm:middle], cases[middle:]):
                outcomes += await _run_all(http, options, part)
                rss.append((await _read(options, hostport)).rss)
        finally:
            if sampler is not None:
                sampler.cancel()
                await asyncio.gather(sampler, return_exceptions=True)
        elapsed = time.monotonic() - started
        settled = await _settle(options, hostport, before)
        after = await _read(options, hostport)
        probe = [
            await run_case(http, options.target, options.key, make_probe(plan, kind), 60.0)
            for kind in ("stt", "tts")
        ]
    result = _result(options, outcomes, probe, before, after, settled, elapsed, rss, peak)
    result.meta["stt_model"] = {"interim_results": plan.interim}
    return result


def make_probe(plan: Plan, kind: str) -> Case:
    """A valid session of ``kind``, from the first seed whose case is one."""
    only = dataclasses.replace(plan, families=("valid",))
    for index in range(1000):
        case = make_case(0, index, only)
        if case.kind == kind:
            return case
    raise AssertionError(f"no valid {kind} case")  # pragma: no cover


async def _run_all(
    http: aiohttp.ClientSession, options: Options, cases: list[Case]
) -> list[Outcome]:
    semaphore = asyncio.Semaphore(options.concurrency)

    async def one(case: Case) -> Outcome:
        async with semaphore:
            return await run_case(http, options.target, options.key, case, options.deadline_s)

    return list(await asyncio.gather(*(one(c) for c in cases)))


async def _sample_peak(options: Options, peak: list[int]) -> None:
    """Keep the highest RSS of the gateway in ``peak`` (one item) until cancelled."""
    assert options.pid is not None
    while True:
        try:
            now = probes.rss_bytes(options.pid)
        except OSError:
            return  # the process is gone: the "alive" invariant says so
        if not peak or now > peak[0]:
            peak[:] = [now]
        await asyncio.sleep(options.rss_every_s)


async def _settle(options: Options, hostport: str, before: Readings) -> float | None:
    """Seconds until the gateway's open sessions are back at the baseline (None: never, within
    ``settle_s``, or not readable)."""
    if before.sessions is None:
        return None
    start = time.monotonic()
    while time.monotonic() - start < options.settle_s:
        now = await _read(options, hostport)
        if now.sessions is not None and now.sessions <= before.sessions:
            return time.monotonic() - start
        await asyncio.sleep(0.2)
    return None


def _result(
    options: Options,
    outcomes: list[Outcome],
    probe: list[Outcome],
    before: Readings,
    after: Readings,
    settled: float | None,
    elapsed: float,
    rss: list[int | None],
    peak: list[int] | None = None,
) -> Result:
    verdicts: Counter[str] = Counter()
    by_family: dict[str, Counter[str]] = defaultdict(Counter)
    reasons: Counter[str] = Counter()
    examples: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for outcome in outcomes:
        verdict, why = judge(outcome)
        verdicts[verdict] += 1
        by_family[outcome.case.family][verdict] += 1
        if verdict == "rejected":
            reasons[why] += 1
        if verdict in BAD and len(examples[verdict]) < 5:
            examples[verdict].append(
                {
                    **describe(outcome.case),
                    "why": why,
                    "close": outcome.close_code,
                    "seconds": round(outcome.seconds, 2),
                }
            )
    invariants = [_inv(f"{v} sessions", verdicts[v], verdicts[v] == 0) for v in BAD]
    invariants.append(
        _inv(
            "open sessions back at the baseline",
            f"{before.sessions} -> {after.sessions} ({settled:.1f} s)"
            if settled is not None
            else f"{before.sessions} -> {after.sessions}",
            None if before.sessions is None else settled is not None,
        )
    )
    if None not in rss:
        warm, middle, end = (r / 2**20 for r in rss if r is not None)
        invariants.append(
            _inv(
                "RSS after the warm-up, at the middle, at the end",
                f"{warm:.0f}, {middle:.0f}, {end:.0f} MiB (second half {end - middle:+.1f} MiB)",
                (end - middle) * 2**20 < options.rss_growth_limit,
            )
        )
    if peak:
        invariants.append(
            _inv(
                "RSS at its highest while the cases ran",
                f"{peak[0] / 2**20:.0f} MiB (at most {options.peak_rss_limit / 2**20:.0f})",
                peak[0] <= options.peak_rss_limit,
            )
        )
    if options.log is not None and before.log_size is not None:
        counts = probes.count_log(options.log, before.log_size)
        for name, count in counts.items():
            invariants.append(_inv(f"log: {name}", count, count == 0))
    if options.pid is not None:
        invariants.append(_inv("gateway alive", _alive(options.pid), _alive(options.pid)))
    for outcome in probe:
        verdict, why = judge(outcome)
        invariants.append(
            _inv(
                f"a valid {outcome.case.kind} session afterwards",
                verdict + (f": {why}" if why else ""),
                verdict == "ok",
            )
        )
    meta = {
        "target": options.target,
        "cases": len(outcomes),
        "concurrency": options.concurrency,
        "seed": options.seed,
        "seconds": round(elapsed, 1),
        "cases_per_second": round(len(outcomes) / elapsed, 1) if elapsed else None,
        "families": list(options.families),
    }
    return Result(
        meta,
        {v: verdicts[v] for v in VERDICTS},
        {f: dict(c) for f, c in sorted(by_family.items())},
        dict(reasons.most_common()),
        invariants,
        dict(examples),
    )


def _inv(name: str, value: Any, ok: bool | None) -> dict[str, Any]:
    return {"name": name, "value": str(value), "ok": ok}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
