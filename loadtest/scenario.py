"""A load-test scenario: what to drive, how sessions arrive, how long they last, and the bounds.

Scenarios are TOML files (docs/design/loadtest.md, "Scenario file"); every key has a default,
so the command line alone describes a run, and a flag given on the command line overrides the
file. ``load`` validates everything up front and raises ``ScenarioError`` naming the key.
Relative paths in a file (speech sets, arrival traces) are resolved from the file's folder.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.recorder import METRICS, STAGE_PREFIX, known_metric
from voxwire.audio.codecs import Encoding

TARGETS = ("grpc", "triton", "tritonclient", "echo", "gateway", "null-relay")
KINDS = ("stt", "tts", "mixed")
WIRE_ENCODINGS = tuple(e.value for e in Encoding)
G711 = (Encoding.MULAW.value, Encoding.ALAW.value)
PROCESSES = ("poisson", "constant", "step", "ramp", "burst", "trace", "concurrency")
LENGTHS = ("files", "fixed", "uniform", "exponential", "lognormal")
REPO = Path(__file__).resolve().parent.parent
# The default speech set: the repository's committed fixtures (16 kHz PCM16 WAVs with
# transcripts.json), referenced in place rather than copied into the package.
DEFAULT_SPEECH = REPO / "tests" / "fixtures" / "speech"
DEFAULT_TEXTS = (
    "Thanks for calling. Your order has shipped and should arrive on Thursday.",
    "I can help with that. Could you tell me the account number, please?",
    "The quick brown fox jumps over the lazy dog.",
)
# Hard ceilings of the tool itself: no scenario may ask for more.
CEILING_DURATION_S = 4 * 3600.0
CEILING_STREAMS = 20_000


class ScenarioError(ValueError):
    """A scenario key is missing, of the wrong type, or out of range."""


@dataclass(frozen=True, slots=True)
class TargetSpec:
    kind: str = "grpc"
    # host:port; the tool sends to this address and nowhere else (loopback by default).
    address: str = "127.0.0.1:50051"
    # triton: where to read model configs when ``address`` serves only ModelStreamInfer (the
    # null proxy); empty: ``address`` itself.
    models_from: str = ""
    # gateway: the API key (empty: $VOXWIRE_API_KEY); never written into a result.
    api_key: str = ""
    # gateway TTS: how far audio may run ahead of real-time playback (query ``lead_ms``);
    # -1: the gateway's default, 0: as fast as the model.
    lead_ms: int = -1


@dataclass(frozen=True, slots=True)
class Limits:
    duration_s: float = 20.0  # arrivals stop after this long
    max_duration_s: float = 120.0  # hard stop: sessions still open are cancelled and counted
    max_streams: int = 1000  # concurrent sessions; an arrival beyond it is refused, not queued
    max_sessions: int = 100_000
    workers: int = 1
    seed: int = 1
    warmup_s: float = 0.0  # messages intended before this are not recorded
    interval_s: float = 1.0  # interval histograms and progress lines
    step_timeout_s: float = 30.0  # any single wait for the target


@dataclass(frozen=True, slots=True)
class ArrivalSpec:
    process: str = "concurrency"
    rate: float = 1.0  # sessions per second (poisson, constant, step/burst base, ramp start)
    to_rate: float = 1.0  # ramp end
    steps: tuple[tuple[float, float], ...] = ()  # step: (from second, rate)
    burst_factor: float = 10.0
    burst_at_s: float = 5.0
    burst_s: float = 5.0
    random: bool = False  # step, ramp, burst: Poisson arrivals at the curve's rate
    trace: Path | None = None  # trace: arrival offsets in seconds, one per line
    trace_speed: float = 1.0
    sessions: int = 1  # concurrency: sessions kept open at once
    stagger_s: float = 0.1  # concurrency: slots start at uniform offsets within this


@dataclass(frozen=True, slots=True)
class LengthSpec:
    """STT session length: ``files`` whole speech files (distribution "files", the default;
    WER needs whole files), or files back to back cut at a drawn number of seconds."""

    distribution: str = "files"
    files: int = 1
    seconds: float = 10.0  # fixed
    low: float = 5.0  # uniform
    high: float = 15.0
    mean: float = 10.0  # exponential
    median: float = 10.0  # lognormal
    sigma: float = 0.5


@dataclass(frozen=True, slots=True)
class SttSpec:
    model: str = ""
    chunk_ms: int = 100
    speech: Path = DEFAULT_SPEECH
    interim_results: bool = True
    # The wire format the audio is sent in (voxwire.audio.codecs names: pcm_s16le, pcm_f32le,
    # mulaw, alaw) and its rate (0: the speech set's own; G.711: 8000). Telephony is "mulaw"
    # at 8000 Hz in 20 ms chunks (Twilio's media frames).
    encoding: str = "pcm_s16le"
    sample_rate_hz: int = 0
    await_started: bool = True  # audio is paced from `started`, not from the session's start
    wer: bool = True
    length: LengthSpec = field(default_factory=LengthSpec)

    @property
    def wire_rate_hz(self) -> int:
        """The rate audio is sent at: 0 for the speech set's own."""
        return self.sample_rate_hz or (8000 if self.encoding in G711 else 0)


@dataclass(frozen=True, slots=True)
class TtsSpec:
    model: str = ""
    voice: str = ""
    sample_rate_hz: int = 24000
    encoding: str = "pcm_s16le"  # the output format's encoding (as stt.encoding)
    texts: tuple[str, ...] = DEFAULT_TEXTS
    turns: int = 1  # contexts per session, one after the other
    turn_gap_s: float = 0.0
    playout_delay_ms: float = 0.0  # jitter buffer before playback starts


@dataclass(frozen=True, slots=True)
class Objective:
    """``metric``'s ``percentile`` must be at most ``max_ms``."""

    metric: str
    percentile: float
    max_ms: float


@dataclass(frozen=True, slots=True)
class SloSpec:
    objectives: tuple[Objective, ...] = ()
    max_error_rate: float = 0.001
    max_underruns: int = 0
    confidence: float = 0.95


@dataclass(frozen=True, slots=True)
class SearchSpec:
    over: str = "rate"  # rate (open arrivals) or concurrency
    low: float = 1.0
    high: float = 100.0
    tolerance: float = 1.0
    repeats: int = 2
    trial_s: float = 20.0
    # A level whose pooled repeats hold too few samples to bound a percentile at the stated
    # confidence runs more repeats, up to this many in all (0: three times ``repeats``).
    max_repeats: int = 0

    @property
    def repeat_cap(self) -> int:
        return self.max_repeats or 3 * self.repeats


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str = "adhoc"
    kind: str = "stt"
    stt_share: float = 0.5  # mixed: the share of sessions that are STT
    target: TargetSpec = field(default_factory=TargetSpec)
    limits: Limits = field(default_factory=Limits)
    arrivals: ArrivalSpec = field(default_factory=ArrivalSpec)
    stt: SttSpec = field(default_factory=SttSpec)
    tts: TtsSpec = field(default_factory=TtsSpec)
    slo: SloSpec = field(default_factory=SloSpec)
    search: SearchSpec = field(default_factory=SearchSpec)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scenario:
        """The inverse of ``to_dict`` (how workers receive their scenario)."""
        return _build(data, Path("."))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def _section(cls: type, data: Any, where: str, base: Path, **nested: Any) -> Any:
    if not isinstance(data, dict):
        raise ScenarioError(f"[{where}] must be a table")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(names)
    if unknown:
        raise ScenarioError(f"[{where}] unknown keys: {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key in nested or raw is None:
            continue
        default = getattr(cls(), key)
        values[key] = _coerce(raw, default, f"{where}.{key}", base)
    return cls(**values, **nested)


def _coerce(raw: Any, default: Any, where: str, base: Path) -> Any:
    if isinstance(default, bool):
        if not isinstance(raw, bool):
            raise ScenarioError(f"{where} must be true or false")
        return raw
    if isinstance(default, int) and not isinstance(raw, bool) and isinstance(raw, int):
        return raw
    if isinstance(default, float) and isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    if isinstance(default, str) and isinstance(raw, str):
        return raw
    if (default is None or isinstance(default, Path)) and isinstance(raw, str):
        path = Path(raw)
        return path if path.is_absolute() else (base / path)
    if isinstance(default, tuple) and isinstance(raw, list):
        return tuple(tuple(x) if isinstance(x, list) else x for x in raw)
    raise ScenarioError(f"{where}: {raw!r} is not a {type(default).__name__}")


def _build(data: dict[str, Any], base: Path) -> Scenario:
    top = {k: v for k, v in data.items() if not isinstance(v, dict)}
    known = {"name", "kind", "stt_share"}
    if set(top) - known:
        raise ScenarioError(f"unknown top-level keys: {', '.join(sorted(set(top) - known))}")
    stt_data = dict(data.get("stt", {}))
    length = _section(LengthSpec, stt_data.pop("length", {}), "stt.length", base)
    slo_data = dict(data.get("slo", {}))
    objectives = tuple(
        _section(Objective, o, "slo.objectives", base, **_objective(o))
        for o in slo_data.pop("objectives", [])
    )
    sections = {"target", "run", "limits", "arrivals", "stt", "tts", "slo", "search"}
    unknown = set(data) - known - sections
    if unknown:
        raise ScenarioError(f"unknown sections: {', '.join(sorted(unknown))}")
    scenario = Scenario(
        name=str(top.get("name", "adhoc")),
        kind=str(top.get("kind", "stt")),
        stt_share=float(top.get("stt_share", 0.5)),
        target=_section(TargetSpec, data.get("target", {}), "target", base),
        limits=_section(Limits, data.get("run", data.get("limits", {})), "run", base),
        arrivals=_section(ArrivalSpec, data.get("arrivals", {}), "arrivals", base),
        stt=_section(SttSpec, stt_data, "stt", base, length=length),
        tts=_section(TtsSpec, data.get("tts", {}), "tts", base),
        slo=_section(SloSpec, slo_data, "slo", base, objectives=objectives),
        search=_section(SearchSpec, data.get("search", {}), "search", base),
    )
    validate(scenario)
    return scenario


def _objective(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict) or not {"metric", "percentile", "max_ms"} <= set(raw):
        raise ScenarioError("each slo.objectives entry needs metric, percentile and max_ms")
    return {
        "metric": str(raw["metric"]),
        "percentile": float(raw["percentile"]),
        "max_ms": float(raw["max_ms"]),
    }


def parse_objective(text: str) -> Objective:
    """``stt.final:p99<=300`` -> Objective. Raises ScenarioError."""
    try:
        metric, rest = text.split(":", 1)
        pct, limit = rest.split("<=", 1)
        return Objective(metric.strip(), float(pct.strip().lstrip("p")), float(limit.strip()))
    except ValueError as exc:
        raise ScenarioError(f"objective {text!r}: expected METRIC:pNN<=MS") from exc


def load(path: Path | None, overrides: dict[str, Any] | None = None) -> Scenario:
    """Read a scenario file (or the defaults), apply ``{"section.key": value}`` overrides (a
    relative ``Path`` among them is from the working directory), validate. Raises
    ScenarioError, for an unreadable or malformed file too."""
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ScenarioError(f"{path}: no such scenario file") from None
        except IsADirectoryError:
            raise ScenarioError(f"{path}: is a directory, not a scenario file") from None
        except OSError as exc:
            raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
        base = path.resolve().parent
    if "limits" in data:
        # [limits] is [run]'s other name: one table, which the flags' run.* overrides join
        # (a [limits] beside them was dropped: max_duration_s went from 6 to 120 s, silently).
        if "run" in data:
            raise ScenarioError(f"{path}: [run] and [limits] are one table: give one of them")
        data["run"] = data.pop("limits")
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        *parents, key = dotted.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        # A path on the command line is the user's, from where they are: only the file's own
        # paths are resolved from its folder.
        node[key] = str(value.absolute()) if isinstance(value, Path) else value
    try:
        return _build(data, base)
    except ScenarioError:
        raise
    except (ValueError, TypeError) as exc:  # a value of the wrong type (stt_share = "x")
        raise ScenarioError(f"{path or 'the scenario'}: {exc}") from None


def validate(s: Scenario) -> None:
    """Raises ScenarioError for any value out of range."""
    lim, arr = s.limits, s.arrivals
    checks = [
        (s.kind in KINDS, f"kind must be one of {KINDS}"),
        (s.target.kind in TARGETS, f"target.kind must be one of {TARGETS}"),
        (":" in s.target.address, "target.address must be host:port"),
        (arr.process in PROCESSES, f"arrivals.process must be one of {PROCESSES}"),
        (s.stt.length.distribution in LENGTHS, f"stt.length.distribution: one of {LENGTHS}"),
        (
            0 < lim.duration_s <= lim.max_duration_s <= CEILING_DURATION_S,
            f"run: 0 < duration_s <= max_duration_s <= {CEILING_DURATION_S:g}",
        ),
        (0 < lim.max_streams <= CEILING_STREAMS, f"run.max_streams in 1..{CEILING_STREAMS}"),
        (lim.max_sessions > 0, "run.max_sessions must be positive"),
        (1 <= lim.workers <= 64, "run.workers in 1..64"),
        (lim.interval_s > 0 and lim.step_timeout_s > 0, "run: interval_s, step_timeout_s > 0"),
        (0 <= lim.warmup_s < lim.duration_s, "run.warmup_s must be below duration_s"),
        (s.stt.chunk_ms > 0, "stt.chunk_ms must be positive"),
        (0.0 <= s.stt_share <= 1.0, "stt_share in 0..1"),
        (
            math.isfinite(arr.rate) and math.isfinite(arr.to_rate),
            "arrivals: rate and to_rate must be finite (--rate inf planned arrivals for ever, "
            "a worker spinning)",
        ),
        (arr.rate > 0 and arr.to_rate >= 0, "arrivals: rate > 0, to_rate >= 0"),
        (
            math.isfinite(arr.burst_factor) and arr.burst_factor > 0,
            "arrivals.burst_factor must be more than 0 (a burst multiplies the rate)",
        ),
        (
            math.isfinite(arr.stagger_s) and arr.stagger_s >= 0,
            "arrivals.stagger_s must be 0 or more",
        ),
        (
            lim.max_streams >= lim.workers,
            f"run.max_streams ({lim.max_streams}) is split among the workers ({lim.workers}): "
            "it must be at least one each (a worker with none refused every arrival)",
        ),
        (
            all(math.isfinite(o.max_ms) and o.max_ms > 0 for o in s.slo.objectives),
            "an SLO objective's bound (max_ms) must be a finite number of ms, more than 0",
        ),
        (0 <= s.slo.max_error_rate <= 1, "slo.max_error_rate in 0..1 (a share, 0.001 is 0.1 %)"),
        (
            s.tts.turn_gap_s >= 0 and s.tts.playout_delay_ms >= 0,
            "tts: turn_gap_s and playout_delay_ms must be 0 or more",
        ),
        (arr.sessions >= 1, "arrivals.sessions must be at least 1"),
        (arr.process != "trace" or arr.trace is not None, "arrivals.trace: a file is needed"),
        (arr.trace_speed > 0, "arrivals.trace_speed must be positive"),
        (arr.process != "step" or _steps_ok(arr.steps), _STEPS),
        (_length_ok(s.stt.length), f"stt.length: {_LENGTHS}"),
        (s.tts.sample_rate_hz > 0, "tts.sample_rate_hz must be positive"),
        (s.stt.sample_rate_hz >= 0, "stt.sample_rate_hz: 0 (the speech set's rate) or more"),
        (s.stt.encoding in WIRE_ENCODINGS, f"stt.encoding: one of {WIRE_ENCODINGS}"),
        (s.tts.encoding in WIRE_ENCODINGS, f"tts.encoding: one of {WIRE_ENCODINGS}"),
        (
            s.stt.encoding not in G711 or s.stt.sample_rate_hz in (0, 8000),
            "stt.encoding mulaw or alaw is 8 kHz: stt.sample_rate_hz 8000 (or 0)",
        ),
        (
            s.tts.encoding not in G711 or s.tts.sample_rate_hz == 8000,
            "tts.encoding mulaw or alaw is 8 kHz: tts.sample_rate_hz 8000",
        ),
        (s.tts.turns >= 1 and bool(s.tts.texts), "tts: turns >= 1 and some texts"),
        (0 < s.slo.confidence < 1, "slo.confidence in (0, 1)"),
        (s.search.over in ("rate", "concurrency"), "search.over: rate or concurrency"),
        (0 < s.search.low < s.search.high, "search: 0 < low < high"),
        (s.search.repeats >= 1 and s.search.tolerance > 0, "search: repeats >= 1, tolerance > 0"),
        (s.search.trial_s > 0, "search.trial_s (--trial) must be more than 0"),
        (
            s.search.max_repeats == 0 or s.search.max_repeats >= s.search.repeats,
            "search.max_repeats (--search-max-repeats) must be 0 (three times repeats) or at least "
            "search.repeats",
        ),
        (
            all(0 < o.percentile <= 100 for o in s.slo.objectives),
            "an SLO objective's percentile must be more than 0 and at most 100",
        ),
        (
            arr.process != "concurrency" or arr.sessions <= lim.max_streams,
            f"arrivals.sessions ({arr.sessions}, --concurrency) exceeds limits.max_streams "
            f"({lim.max_streams}, --max-streams): the extra slots would never run",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ScenarioError(message)
    for o in s.slo.objectives:
        # A misspelt metric would only show as "no samples" after the whole run.
        if not known_metric(o.metric):
            raise ScenarioError(
                f"an SLO objective's metric {o.metric!r} is not one the tool records: "
                f"{', '.join(METRICS)}, or {STAGE_PREFIX}<name> for a stage"
            )
    if s.target.kind == "echo" and s.kind != "stt":
        raise ScenarioError("the echo target carries STT audio only")
    if s.target.kind == "tritonclient" and s.kind != "stt":
        raise ScenarioError("the tritonclient target drives STT sequences only")
    if s.target.kind == "null-relay" and s.kind != "stt":
        raise ScenarioError("the null-relay target carries STT only")
    if s.target.kind in ("triton", "tritonclient") and (
        s.stt.encoding != "pcm_s16le" or s.stt.sample_rate_hz or s.tts.encoding != "pcm_s16le"
    ):
        raise ScenarioError(
            f"the {s.target.kind} target sends the model's own format: stt.encoding, "
            "stt.sample_rate_hz and tts.encoding are for the voxwire targets (grpc, gateway)"
        )


def check_files(s: Scenario) -> None:
    """The files a run reads, there before it starts (a worker found them missing only after
    the target was connected, with a traceback). Raises ScenarioError."""
    arr = s.arrivals
    if arr.process == "trace" and arr.trace is not None and not arr.trace.is_file():
        raise ScenarioError(f"arrivals.trace (--trace): no such file {arr.trace}")
    if s.kind != "tts" and not s.stt.speech.is_dir():
        raise ScenarioError(f"stt.speech (--speech): {s.stt.speech} is not a folder")


# Values that were accepted here and failed only in a worker: a traceback, or every session a
# CLIENT_ERROR (a negative length cut no audio at all).
_STEPS = "arrivals.steps: [[0, rate], [second, rate], ...], ascending seconds, finite rates >= 0"
_LENGTHS = "files >= 1, seconds > 0, 0 < low <= high, mean > 0, median > 0, sigma >= 0"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _steps_ok(steps: tuple[tuple[float, float], ...]) -> bool:
    if not steps or not all(
        isinstance(step, tuple) and len(step) == 2 and all(map(_number, step)) for step in steps
    ):
        return False
    seconds = [t for t, _ in steps]
    rates_ok = all(r >= 0 and math.isfinite(r) for _, r in steps)
    return seconds[0] == 0 and seconds == sorted(seconds) and rates_ok


def _length_ok(length: LengthSpec) -> bool:
    return {
        "files": length.files >= 1,
        "fixed": length.seconds > 0,
        "uniform": 0 < length.low <= length.high,
        "exponential": length.mean > 0,
        "lognormal": length.median > 0 and length.sigma >= 0,
    }.get(length.distribution, True)
