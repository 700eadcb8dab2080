"""The case files: what a case is, how it is read, and what a file may say.

The format is described in docs/design/conformance.md. A case file is TOML with an array of
``[[case]]`` tables. Loading checks the structure (keys, step vocabulary, expressions); the
names of properties and probes are checked against their registries by ``check_names``.
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import grpc

from voxwire.conformance.expr import ExprError, names_in
from voxwire.conformance.richstatus import contract_row
from voxwire.v1 import capabilities_pb2

SERVICES = ("transcription", "synthesis", "capabilities", "health", "reflection")
STREAM_SERVICES = ("transcription", "synthesis")
FEATURES = (
    "interim_results",
    "word_timestamps",
    "endpointing",
    "vocabulary",
    "pronunciation",
    "ssml",
)
# The optional parts of the contract a server claims (voxwire.v1.ServerFeatures).
SERVER_FEATURES = tuple(capabilities_pb2.ServerFeatures.DESCRIPTOR.fields_by_name)
LIMIT_NAMES = (
    "max_chunk_bytes",
    "max_contexts_per_stream",
    "max_pending_text_bytes",
    "idle_timeout_ms",
    "max_stream_duration_ms",
    "max_unread_response_bytes",
    "write_timeout_ms",
)
EXPR_NAMES = frozenset((*LIMIT_NAMES, "frame"))
# What an audio step may send (signals.render): "nan" and "inf" are PCM_F32LE samples that are
# not numbers.
AUDIO_SOURCES = ("speech", "tone", "silence", "nan", "inf")
# "as": the encoding the samples are made in when it is not the declared one (audio that does
# not match its declared format, docs/contract.md).
# "file": the audio sent as a file of that kind, as a client that forgot to decode it does:
# a WAV header naming the format the samples are made in, or FLAC or Ogg Vorbis of them.
_AUDIO_KEYS = frozenset({"source", "ms", "part", "chunk_ms", "bytes", "as", "file"})
AUDIO_MADE_AS = ("PCM_S16LE", "PCM_F32LE", "MULAW", "ALAW")
AUDIO_FILES = ("wav", "flac", "ogg")
# Symbols a config (config, open, update_config) may hold as a value; plan.py resolves them.
# "@long" is client input far over what an error may echo (errors.MAX_*): LONG_INPUT.
SYMBOLS = frozenset(
    {"@default", "@other-kind", "@unknown", "@advertised", "@unadvertised", "@long"}
)

# Step actions per service; every step has exactly one action key.
_COMMON_ACTIONS = frozenset(
    {
        "empty",
        "garbage",
        "wait",
        "sleep_ms",
        "repeat",
        "keep_alive",
        "pause_reading",
        "resume_reading",
    }
)
ACTIONS = {
    "transcription": _COMMON_ACTIONS | {"config", "audio", "finalize", "update_config", "close"},
    "synthesis": _COMMON_ACTIONS | {"open", "append", "flush", "cancel", "close"},
}
# Keys that qualify an action rather than being one.
_MODIFIERS = {"context", "step"}
_CASE_KEYS = frozenset(
    {
        "id",
        "promise",
        "section",
        "service",
        "needs",
        "server_needs",
        "lacks",
        "limits",
        "waits",
        "timeout_s",
        "steps",
        "probe",
        "params",
        "expect",
        "half_close",
        "when",
        "holds",
        "writer",
    }
)
# How the kit writes a case's messages: "guarded" (voxwire.stream_write.write_unless_ended: a
# write racing the server's status never costs the status) or "plain" (grpc.aio's own
# ``call.write``, as other people's clients write).
WRITERS = ("guarded", "plain")
_EXPECT_KEYS = frozenset(
    {
        "status",
        "reason",
        "violations",
        "first",
        "last",
        "context_errors",
        "done",
        "update_acks",
        "properties",
    }
)


class CaseFileError(ValueError):
    """A case file that does not follow the format (the message names the file and case)."""


@dataclass(frozen=True, slots=True)
class Expect:
    status: str = "OK"
    reason: str = ""
    violations: tuple[str, ...] = ()
    first: str = ""
    last: str = ""
    context_errors: Mapping[str, str] = field(default_factory=dict)
    done: tuple[str, ...] = ()
    update_acks: Mapping[str, str] = field(default_factory=dict)
    properties: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    promise: str
    section: str
    service: str
    needs: tuple[str, ...] = ()
    # ServerFeatures the case is about (it is skipped on a server that does not claim them).
    server_needs: tuple[str, ...] = ()
    lacks: tuple[str, ...] = ()
    limits: tuple[str, ...] = ()
    waits: str = ""
    timeout_s: float = 0.0  # 0: the run's default (Options.case_timeout_s)
    steps: tuple[Mapping[str, Any], ...] = ()
    probe: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    expect: Expect = field(default_factory=Expect)
    # "now": half-close after the last step; "never": the server must end the stream by
    # itself; "settle": give the server time to end it (an error is expected), then half-close.
    half_close: str = "now"
    when: str = ""  # a condition over the limits, e.g. "max_chunk_bytes > max_pending_text_bytes"
    # Streams (STT) or contexts (TTS) of its model the case holds at once, an expression over
    # the limits: such a case runs alone, is skipped when the model advertises less capacity,
    # and an OVERLOADED answer makes it inconclusive (retried, then skipped), never failed.
    holds: str = ""
    writer: str = "guarded"
    source: str = ""

    @property
    def kind(self) -> str:
        """``stt`` or ``tts`` for the streaming services, else ``""``."""
        return {"transcription": "stt", "synthesis": "tts"}.get(self.service, "")


def bundled_files() -> list[Path]:
    """The case files shipped in the package, sorted by name."""
    root = resources.files("voxwire.conformance") / "cases"
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".toml"))


def load(paths: Iterable[Path]) -> list[Case]:
    """Every case of ``paths``, in file order. Raises CaseFileError (also for duplicate ids)."""
    cases: list[Case] = []
    seen: dict[str, str] = {}
    for path in paths:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CaseFileError(f"{path}: {exc}") from exc
        for raw in data.get("case", []):
            case = parse_case(raw, source=path.name)
            if case.id in seen:
                raise CaseFileError(f"{path.name}: case id {case.id!r} already in {seen[case.id]}")
            seen[case.id] = path.name
            cases.append(case)
        extra = set(data) - {"case"}
        if extra:
            raise CaseFileError(f"{path.name}: unknown top-level keys {sorted(extra)}")
    return cases


def select(cases: Sequence[Case], patterns: Sequence[str]) -> list[Case]:
    """The cases whose id matches one of the glob ``patterns`` (all when none are given)."""
    if not patterns:
        return list(cases)
    return [c for c in cases if any(fnmatch.fnmatchcase(c.id, p) for p in patterns)]


def parse_case(raw: Mapping[str, Any], *, source: str = "") -> Case:
    """One ``[[case]]`` table. Raises CaseFileError."""
    where = f"{source}: case {raw.get('id', '?')!r}"
    unknown = set(raw) - _CASE_KEYS
    if unknown:
        raise CaseFileError(f"{where}: unknown keys {sorted(unknown)}")
    for key in ("id", "promise", "section", "service"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise CaseFileError(f"{where}: {key} (a non-empty string) is required")
    service = raw["service"]
    if service not in SERVICES:
        raise CaseFileError(f"{where}: service must be one of {SERVICES}")
    steps = tuple(raw.get("steps", ()))
    probe = raw.get("probe", "")
    if bool(steps) == bool(probe):
        raise CaseFileError(f"{where}: a case has either steps or a probe")
    if steps and service not in STREAM_SERVICES:
        raise CaseFileError(f"{where}: steps need a streaming service")
    for name in (*raw.get("needs", ()), *raw.get("lacks", ())):
        if name not in FEATURES:
            raise CaseFileError(f"{where}: unknown feature {name!r}; known: {FEATURES}")
    for name in raw.get("server_needs", ()):
        if name not in SERVER_FEATURES:
            raise CaseFileError(
                f"{where}: unknown server feature {name!r}; known: {SERVER_FEATURES}"
            )
    for name in raw.get("limits", ()):
        if name not in LIMIT_NAMES:
            raise CaseFileError(f"{where}: unknown limit {name!r}; known: {LIMIT_NAMES}")
    waits = raw.get("waits", "")
    if waits and waits not in LIMIT_NAMES:
        raise CaseFileError(f"{where}: waits must name a limit duration, not {waits!r}")
    for i, step in enumerate(steps):
        _check_step(step, service, f"{where}, step {i + 1}")
    expect = _parse_expect(raw.get("expect", {}), where)
    when = raw.get("when", "")
    _check_case_expr(when, "when", where)
    holds = raw.get("holds", "")
    _check_case_expr(holds, "holds", where)
    if holds and service not in STREAM_SERVICES:
        raise CaseFileError(f"{where}: holds needs a streaming service")
    writer = raw.get("writer", "guarded")
    if writer not in WRITERS:
        raise CaseFileError(f"{where}: writer must be one of {WRITERS}, not {writer!r}")
    half_close = raw.get("half_close")
    if half_close is None:
        mode = "now" if expect.status == "OK" else "settle"
    else:
        mode = "now" if half_close else "never"
    return Case(
        id=raw["id"],
        promise=raw["promise"],
        section=raw["section"],
        service=service,
        needs=tuple(raw.get("needs", ())),
        server_needs=tuple(raw.get("server_needs", ())),
        lacks=tuple(raw.get("lacks", ())),
        limits=tuple(raw.get("limits", ())),
        waits=waits,
        timeout_s=float(raw.get("timeout_s", 0.0)),
        steps=steps,
        probe=probe,
        params=dict(raw.get("params", {})),
        expect=expect,
        half_close=mode,
        when=when,
        holds=holds,
        writer=writer,
        source=source,
    )


def _parse_expect(raw: Mapping[str, Any], where: str) -> Expect:
    unknown = set(raw) - _EXPECT_KEYS
    if unknown:
        raise CaseFileError(f"{where}: unknown expect keys {sorted(unknown)}")
    reason = raw.get("reason", "")
    status = raw.get("status", "")
    if not status:
        status = _code_of(reason, where) if reason else "OK"
    if status not in grpc.StatusCode.__members__:
        raise CaseFileError(f"{where}: status {status!r} is not a gRPC code name")
    for value in (*raw.get("context_errors", {}).values(), reason):
        if value:
            _code_of(value, where)
    return Expect(
        status=status,
        reason=reason,
        violations=tuple(raw.get("violations", ())),
        first=raw.get("first", ""),
        last=raw.get("last", ""),
        context_errors=dict(raw.get("context_errors", {})),
        done=tuple(raw.get("done", ())),
        update_acks=dict(raw.get("update_acks", {})),
        properties=tuple(raw.get("properties", ())),
    )


def _code_of(reason: str, where: str) -> str:
    try:
        return contract_row(reason).code.name
    except KeyError:
        raise CaseFileError(f"{where}: {reason!r} is not a reason of the contract") from None


def _check_step(step: Any, service: str, where: str) -> None:
    if not isinstance(step, Mapping):
        raise CaseFileError(f"{where}: a step is a table, got {step!r}")
    actions = [k for k in step if k not in _MODIFIERS]
    if "repeat" in actions:
        actions = ["repeat"]  # its sleep_ms is a modifier: the pause before each repetition
        inner = step.get("step")
        if not isinstance(inner, Mapping):
            raise CaseFileError(f"{where}: repeat needs a step table")
        _check_step(inner, service, where + " (repeated)")
    if len(actions) != 1:
        raise CaseFileError(f"{where}: exactly one action per step, got {sorted(step)}")
    action = actions[0]
    if action not in ACTIONS[service]:
        raise CaseFileError(
            f"{where}: {action!r} is not a {service} step; known: {sorted(ACTIONS[service])}"
        )
    for value in _expressions(step):
        _check_names(value, where)
    _check_action(action, step[action], where)


def _check_action(action: str, value: Any, where: str) -> None:
    """The parts of an action's value that the kit would otherwise refuse only when it runs."""
    if action == "audio":
        spec = value if isinstance(value, Mapping) else {"source": value}
        unknown = set(spec) - _AUDIO_KEYS
        if unknown:
            raise CaseFileError(f"{where}: unknown audio keys {sorted(unknown)}")
        if spec.get("source", "speech") not in AUDIO_SOURCES:
            raise CaseFileError(f"{where}: audio source {spec['source']!r}; known: {AUDIO_SOURCES}")
        if spec.get("as", "PCM_S16LE") not in AUDIO_MADE_AS:
            raise CaseFileError(f"{where}: audio made as {spec['as']!r}; known: {AUDIO_MADE_AS}")
        if spec.get("file", "wav") not in AUDIO_FILES:
            raise CaseFileError(f"{where}: audio file {spec['file']!r}; known: {AUDIO_FILES}")
    elif action == "garbage":
        if isinstance(value, Mapping):
            if set(value) != {"bytes"}:
                raise CaseFileError(f"{where}: garbage is hex or {{ bytes = size }}")
        else:
            try:
                bytes.fromhex(value)
            except (TypeError, ValueError):
                raise CaseFileError(f"{where}: garbage {value!r} is not hex") from None
    elif action in ("config", "open", "update_config"):
        for symbol in _symbols_in(value):
            if symbol not in SYMBOLS:
                raise CaseFileError(f"{where}: unknown symbol {symbol!r}; known: {sorted(SYMBOLS)}")


def _symbols_in(value: Any) -> list[str]:
    """The strings of a config value that start with "@" (symbols)."""
    if isinstance(value, str):
        return [value] if value.startswith("@") else []
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _symbols_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in _symbols_in(v)]
    return []


def _check_case_expr(value: Any, key: str, where: str) -> None:
    """A case-level expression over the limits (``when``, ``holds``); "" is none."""
    if not value:
        return
    if not isinstance(value, str):
        raise CaseFileError(f"{where}: {key} must be an expression over the limits")
    _check_names(value, f"{where}: {key}")


def _check_names(value: int | str, where: str) -> None:
    """An expression that parses and names only limits (and ``frame``)."""
    try:
        unknown = names_in(value) - EXPR_NAMES
    except ExprError as exc:
        raise CaseFileError(f"{where}: {exc}") from exc
    if unknown:
        raise CaseFileError(f"{where}: unknown names {sorted(unknown)} in {value!r}")


def _expressions(step: Mapping[str, Any]) -> list[int | str]:
    """The values of a step that are sizes or times (expressions allowed)."""
    out: list[int | str] = []
    for key in ("sleep_ms", "repeat"):
        if key in step:
            out.append(step[key])
    for key in ("audio", "append", "garbage"):
        value = step.get(key)
        if isinstance(value, Mapping):
            out += [value[k] for k in ("bytes", "ms") if k in value]
    return out


def check_names(cases: Sequence[Case], properties: Iterable[str], probes: Iterable[str]) -> None:
    """Every property and probe a case names exists. Raises CaseFileError."""
    known_props, known_probes = set(properties), set(probes)
    for case in cases:
        for name in case.expect.properties:
            if name not in known_props:
                raise CaseFileError(f"{case.source}: case {case.id!r}: unknown property {name!r}")
        if case.probe and case.probe not in known_probes:
            raise CaseFileError(f"{case.source}: case {case.id!r}: unknown probe {case.probe!r}")
