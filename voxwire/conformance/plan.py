"""A case's steps resolved against the server: the concrete messages, waits and pauses.

Pure: no I/O. Symbols (``@default``, ``rate = "unadvertised"``, expressions over the limits)
are resolved here, so the driver only sends bytes and the properties know exactly what was
sent (the audio milliseconds before each message, the format of each context).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from voxwire.conformance import signals
from voxwire.conformance.casefile import Case
from voxwire.conformance.catalog import (
    Format,
    ServerCatalog,
    default_format,
    encoding_value,
    limit_names,
    max_channels,
    unadvertised_rate,
)
from voxwire.conformance.expr import evaluate
from voxwire.v1 import capabilities_pb2, stream_pb2, synthesis_pb2, transcription_pb2

SttReq = transcription_pb2.StreamingTranscribeRequest
TtsReq = synthesis_pb2.StreamingSynthesizeRequest
DEFAULT_CONTEXT = "a"
# "@long" in a config: client input far over what an error may echo (docs/contract.md,
# "Errors": a status message of at most 256 bytes, descriptions of at most 128), in two-byte
# characters, so that a server that counts characters instead of bytes echoes too much.
LONG_INPUT = "\u00fc" * 1024
# A byte that starts a varint that never ends: bytes of it never parse as a message.
UNPARSABLE = b"\xff"


class Skip(Exception):
    """The case cannot run on this server (the message says why)."""


@dataclass(frozen=True, slots=True)
class Send:
    message: Message | bytes  # bytes: sent as they are (not a valid message)
    label: str
    context: str = ""
    audio_ms: int = 0  # STT: audio ms sent on the stream once this message is out


@dataclass(frozen=True, slots=True)
class Wait:
    kind: str
    context: str | None = None


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Gate:
    """A rendezvous with a probe (steps built in code only, never in case files): the stream
    says it got here (``reached``), then waits for the probe's ``go``, sending ``keep_alive``
    every ``every_s`` meanwhile so that the wait is not idleness."""

    reached: asyncio.Event
    go: asyncio.Event
    keep_alive: Message | None = None
    every_s: float = 1.0


@dataclass(frozen=True, slots=True)
class Reading:
    """Stop (``on`` false) or resume reading responses: a client that leaves them unread."""

    on: bool


Action = Send | Wait | Sleep | Gate | Reading


@dataclass(slots=True)
class Plan:
    case: Case
    model: capabilities_pb2.ModelCapabilities | None
    limits: dict[str, int]
    catalog_models: list[capabilities_pb2.ModelCapabilities] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    stt_config: transcription_pb2.TranscriptionConfig | None = None
    stt_format: Format | None = None
    contexts: dict[str, synthesis_pb2.SynthesisContextConfig] = field(default_factory=dict)
    context_formats: dict[str, Format] = field(default_factory=dict)
    audio_bytes: int = 0

    @property
    def sends(self) -> list[Send]:
        return [a for a in self.actions if isinstance(a, Send)]


def build(
    case: Case,
    catalog: ServerCatalog,
    model: capabilities_pb2.ModelCapabilities,
    gate: Gate | None = None,
    speech: signals.Samples | None = None,
) -> Plan:
    """Resolve ``case``'s steps for ``model`` (a ``gate`` step waits on ``gate``; ``speech``
    replaces the bundled speech). Raises Skip, or ValueError for a step the kit cannot build
    (a case file error found late)."""
    plan = Plan(case, model, catalog.limits(), list(catalog.caps.models))
    builder = _Builder(plan, catalog, model, gate, speech)
    for step in case.steps:
        builder.step(step)
    return plan


class _Builder:
    def __init__(
        self,
        plan: Plan,
        catalog: ServerCatalog,
        model: capabilities_pb2.ModelCapabilities,
        gate: Gate | None,
        speech: signals.Samples | None = None,
    ) -> None:
        self.plan = plan
        self.gate = gate
        self.speech = speech
        self.catalog = catalog
        self.model = model
        self.kind = plan.case.kind
        self.closed = False  # an STT close was sent: later audio is not the server's

    def names(self, fmt: Format | None = None) -> dict[str, int]:
        return limit_names(self.plan.limits, fmt or self.plan.stt_format)

    def step(self, step: Mapping[str, Any]) -> None:
        if "repeat" in step:
            count = evaluate(step["repeat"], self.names())
            for i in range(1, count + 1):
                if "sleep_ms" in step:
                    self.plan.actions.append(Sleep(evaluate(step["sleep_ms"], self.names()) / 1000))
                self.step(_substitute(step["step"], i))
            return
        if "gate" in step:
            if self.gate is None:
                raise ValueError("a gate step needs a gate")
            idle_ms = self.plan.limits["idle_timeout_ms"]
            keep_alive = (
                SttReq(keep_alive=stream_pb2.KeepAlive())
                if self.kind == "stt"
                else TtsReq(keep_alive=stream_pb2.KeepAlive())
            )
            every = min(1.0, idle_ms / 4000) if idle_ms else 1.0
            self.plan.actions.append(
                dataclasses.replace(self.gate, keep_alive=keep_alive, every_s=every)
            )
        elif "wait" in step:
            self.plan.actions.append(Wait(step["wait"], step.get("context")))
        elif "pause_reading" in step or "resume_reading" in step:
            self.plan.actions.append(Reading("resume_reading" in step))
        elif "sleep_ms" in step:
            self.plan.actions.append(Sleep(evaluate(step["sleep_ms"], self.names()) / 1000))
        elif "garbage" in step:
            spec = step["garbage"]
            if isinstance(spec, Mapping):
                size = evaluate(spec["bytes"], self.names())
                self.send(UNPARSABLE * size, f"garbage {size} bytes")
            else:
                self.send(bytes.fromhex(spec), "garbage")
        elif "empty" in step:
            self.send(SttReq() if self.kind == "stt" else TtsReq(), "empty message")
        elif self.kind == "stt":
            self.stt_step(step)
        else:
            self.tts_step(step)

    def send(self, message: Message | bytes, label: str, context: str = "") -> None:
        audio_ms = self.plan.stt_format.ms_of(self.plan.audio_bytes) if self.plan.stt_format else 0
        self.plan.actions.append(Send(message, label, context, audio_ms))

    # -- transcription -----------------------------------------------------------------------

    def stt_step(self, step: Mapping[str, Any]) -> None:
        if "config" in step:
            config, fmt = self.stt_config(step["config"])
            if self.plan.stt_config is None:
                self.plan.stt_config, self.plan.stt_format = config, fmt
            self.send(SttReq(config=config), "config")
        elif "audio" in step:
            self.audio(step["audio"])
        elif "finalize" in step:
            fin = transcription_pb2.Finalize(finalize_id=str(step["finalize"]))
            self.send(SttReq(finalize=fin), f"finalize {fin.finalize_id}")
        elif "update_config" in step:
            update = json_format.ParseDict(
                _resolve_long(step["update_config"]), transcription_pb2.UpdateTranscriptionConfig()
            )
            self.send(SttReq(update_config=update), f"update_config {update.update_id}")
        elif "keep_alive" in step:
            self.send(SttReq(keep_alive=stream_pb2.KeepAlive()), "keep_alive")
        elif "close" in step:
            self.send(SttReq(close=transcription_pb2.CloseStream()), "close")
            self.closed = True

    def stt_config(
        self, spec: Mapping[str, Any]
    ) -> tuple[transcription_pb2.TranscriptionConfig, Format]:
        rest = _resolve_long(spec)  # a copy: the case's own data stays as loaded
        model = self.model_name(rest.pop("model", None))
        fmt = self.format(rest.pop("audio_format", {}))
        config = json_format.ParseDict(rest, transcription_pb2.TranscriptionConfig())
        config.model = model
        config.audio_format.CopyFrom(fmt.to_proto())
        return config, fmt

    def audio(self, spec: str | Mapping[str, Any]) -> None:
        spec = {"source": spec} if isinstance(spec, str) else dict(spec)
        fmt = self.plan.stt_format or default_format(self.model)
        if "bytes" in spec:
            size = evaluate(spec["bytes"], self.names(fmt))
            self.plan.audio_bytes += 0 if self.closed else size
            self.send(SttReq(audio=bytes(size)), f"audio {size} bytes")
            return
        ms = evaluate(spec["ms"], self.names(fmt)) if "ms" in spec else None
        # Made in another encoding than the declared one ("as"): the bytes are sent as they
        # are, cut to whole frames of the declared format. G.711 is made at 8 kHz, as the
        # telephony that sends it has it.
        made = fmt
        if "as" in spec:
            encoding = encoding_value(spec["as"])
            rate = 8000 if spec["as"] in ("MULAW", "ALAW") else fmt.rate
            made = Format(encoding, rate, fmt.channels)
        data = signals.render(
            spec.get("source", "speech"),
            made,
            ms=ms,
            part=spec.get("part", "all"),
            own_speech=self.speech,
            file=spec.get("file"),
        )
        data = data[: len(data) - len(data) % fmt.bytes_per_frame]
        chunks = signals.chunked(
            data, fmt, int(spec.get("chunk_ms", 200)), self.plan.limits["max_chunk_bytes"]
        )
        for chunk in chunks:
            # Audio after a close is discarded unread (docs/contract.md): not received.
            self.plan.audio_bytes += 0 if self.closed else len(chunk)
            self.send(SttReq(audio=chunk), f"audio {spec.get('source', 'speech')}")

    # -- synthesis ---------------------------------------------------------------------------

    def tts_step(self, step: Mapping[str, Any]) -> None:
        cid = str(step.get("context", DEFAULT_CONTEXT))
        if "open" in step:
            config = self.tts_config(step["open"])
            self.plan.contexts.setdefault(cid, config)
            self.plan.context_formats.setdefault(cid, _format_of(config.output_format))
            self.send(TtsReq(context_id=cid, open=config), f"open {cid}", cid)
        elif "append" in step:
            text = self.text(step["append"])
            self.send(
                TtsReq(context_id=cid, append=synthesis_pb2.AppendText(text=text)),
                f"append {cid} ({len(text.encode())} bytes)",
                cid,
            )
        elif "flush" in step:
            flush = synthesis_pb2.Flush(flush_id=str(step["flush"]))
            self.send(TtsReq(context_id=cid, flush=flush), f"flush {cid} {flush.flush_id}", cid)
        elif "cancel" in step:
            self.send(TtsReq(context_id=cid, cancel=synthesis_pb2.Cancel()), f"cancel {cid}", cid)
        elif "close" in step:
            self.send(
                TtsReq(context_id=cid, close=synthesis_pb2.CloseContext()), f"close {cid}", cid
            )
        elif "keep_alive" in step:
            self.send(TtsReq(keep_alive=stream_pb2.KeepAlive()), "keep_alive")

    def tts_config(self, spec: Mapping[str, Any]) -> synthesis_pb2.SynthesisContextConfig:
        rest = _resolve_long(spec)  # a copy: the case's own data stays as loaded
        model = self.model_name(rest.pop("model", None))
        fmt = self.format(rest.pop("output_format", {}))
        if rest.get("voice") == "@unknown":
            rest["voice"] = "no-such-voice"
        for entry in rest.get("pronunciations", ()):
            if entry.get("alphabet") == "@unadvertised":
                entry["alphabet"] = self.unadvertised_alphabet()
            elif entry.get("alphabet") == "@advertised":
                entry["alphabet"] = self.advertised_alphabet()
        config = json_format.ParseDict(rest, synthesis_pb2.SynthesisContextConfig())
        config.model = model
        config.output_format.CopyFrom(fmt.to_proto())
        return config

    def advertised_alphabet(self) -> str:
        offered = list(self.model.features.pronunciation_alphabets)
        if not offered:
            raise Skip(f"{self.model.name} advertises pronunciation but no phoneme alphabet")
        return synthesis_pb2.PhonemeAlphabet.Name(offered[0])

    def unadvertised_alphabet(self) -> str:
        offered = set(self.model.features.pronunciation_alphabets)
        for value in synthesis_pb2.PhonemeAlphabet.values():
            if value and value not in offered:
                return synthesis_pb2.PhonemeAlphabet.Name(value)
        raise Skip(f"{self.model.name} advertises every phoneme alphabet")

    def text(self, spec: str | Mapping[str, Any]) -> str:
        if isinstance(spec, str):
            return spec
        size = evaluate(spec["bytes"], self.names())
        # Words without a sentence end: all of it is unsynthesized text when it arrives.
        return ("hello " * (size // 6 + 1))[:size]

    # -- shared ------------------------------------------------------------------------------

    def model_name(self, spec: str | None) -> str:
        if spec is None:
            return self.model.name
        if spec == "@default":
            return ""
        if spec == "@other-kind":
            other = self.catalog.other_kind(self.kind)
            if not other:
                raise Skip(f"the server offers no model of the other kind than {self.kind.upper()}")
            return other
        return spec

    def format(self, spec: Mapping[str, Any]) -> Format:
        name = spec.get("encoding")
        if name is None:
            base = default_format(self.model)
            encoding = base.encoding
        elif name == "UNSPECIFIED":
            encoding, base = 0, Format(0, 16000)
        else:
            encoding = encoding_value(name)
            base = default_format(self.model, encoding)
        rate = spec.get("rate", base.rate)
        if rate == "unadvertised":
            rate = unadvertised_rate(self.model, encoding)
        channels = spec.get("channels", 1)
        if channels == "max+1":
            channels = max_channels(self.model, encoding) + 1
        return Format(encoding, int(rate), int(channels))


def _format_of(proto: Any) -> Format:
    return Format(proto.encoding, proto.sample_rate_hz, proto.channels or 1)


def _resolve_long(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a config ``spec`` with every "@long" replaced by LONG_INPUT."""

    def resolve(value: Any) -> Any:
        if value == "@long":
            return LONG_INPUT
        if isinstance(value, Mapping):
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v) for v in value]
        return copy.deepcopy(value)

    return dict(resolve(spec))


def _substitute(value: Any, i: int) -> Any:
    """``{i}`` in every string of a repeated step becomes the repetition number."""
    if isinstance(value, str):
        return value.replace("{i}", str(i))
    if isinstance(value, Mapping):
        return {k: _substitute(v, i) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, i) for v in value]
    return value
