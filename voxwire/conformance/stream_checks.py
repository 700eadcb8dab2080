"""Property checks that apply to both streaming services: the timing trailers every stream
ends with, OK or not (docs/contract.md, "Timings"), the model a stream says it runs, and how
much of the client's input an error echoes (docs/contract.md, "Errors")."""

from __future__ import annotations

import re
from typing import Any

from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from voxwire.conformance.driver import Outcome
from voxwire.conformance.expect import summary
from voxwire.conformance.plan import Plan
from voxwire.conformance.richstatus import DETAILS_TRAILER
from voxwire.conformance.verdict import Verdict, failed, passed, prop
from voxwire.timings import SERVER_TIMING_TRAILER, STAGES, TIMINGS_TRAILER
from voxwire.v1 import timings_pb2

# W3C Server Timing: metric *( OWS ";" OWS param ), param = name [ "=" value ].
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_VALUE = r'(?:[!#$%&\'*+\-.^_`|~0-9A-Za-z]+|"[^"]*")'
_METRIC = re.compile(rf"^\s*({_TOKEN})((?:\s*;\s*{_TOKEN}(?:\s*=\s*{_VALUE})?)*)\s*$")
_PARAM = re.compile(rf"\s*;\s*({_TOKEN})(?:\s*=\s*({_VALUE}))?")
# The server-timing figures are the binary ones in ms; printed rounding may differ this much.
_TOLERANCE_MS = 0.01
# What an error may echo of the client's input (docs/contract.md, "Errors"), in UTF-8 bytes.
MAX_MESSAGE_BYTES, MAX_VIOLATIONS, MAX_FIELD_BYTES, MAX_DESCRIPTION_BYTES = 256, 8, 96, 128


def parse_server_timing(value: str) -> dict[str, float] | str:
    """{metric: dur ms} of a Server-Timing value, or why it does not parse."""
    metrics: dict[str, float] = {}
    for part in value.split(","):
        match = _METRIC.match(part)
        if not match:
            return f"{part.strip()!r} is not a Server-Timing metric"
        name, params = match.groups()
        for key, raw in _PARAM.findall(params):
            if key == "dur":
                try:
                    metrics[name] = float(raw.strip('"'))
                except ValueError:
                    return f"{name}: dur={raw!r} is not a number"
    return metrics


@prop("timing_trailers")
def timing_trailers(out: Outcome, plan: Plan) -> Verdict:
    """voxwire-timings-bin parses as StageTimings; server-timing parses, has total, and says
    the same as the binary form."""
    raw = out.trailers.get(TIMINGS_TRAILER)
    if raw is None:
        return failed(f"no {TIMINGS_TRAILER} trailer ({out.code.name})")
    if isinstance(raw, str):
        return failed(f"{TIMINGS_TRAILER} is text, not binary")
    try:
        timings = timings_pb2.StageTimings.FromString(raw)
    except DecodeError as exc:
        return failed(f"{TIMINGS_TRAILER} is not a StageTimings ({exc})")
    text = out.trailers.get(SERVER_TIMING_TRAILER)
    if not isinstance(text, str):
        return failed(f"no {SERVER_TIMING_TRAILER} trailer ({out.code.name})")
    metrics = parse_server_timing(text)
    if isinstance(metrics, str):
        return failed(f"{SERVER_TIMING_TRAILER}: {metrics}")
    if "total" not in metrics:
        return failed(f"{SERVER_TIMING_TRAILER} has no total: {text!r}")
    pairs = {**{name: fld for name, fld in STAGES.items()}, "total": "total_us"}
    for name, fld in pairs.items():
        if name in metrics and abs(metrics[name] - getattr(timings, fld) / 1000) > _TOLERANCE_MS:
            return failed(
                f"{SERVER_TIMING_TRAILER} {name}={metrics[name]} ms, "
                f"{TIMINGS_TRAILER} says {getattr(timings, fld) / 1000} ms"
            )
    return passed(f"{out.code.name} stream: both trailers, total {metrics['total']:.1f} ms")


@prop("started_model")
def started_model(out: Outcome, plan: Plan) -> Verdict:
    """started / opened names the model the config chose (the advertised default for an empty
    name), its native rate as advertised, and (STT) echoes the request id."""
    caps = {m.name: m for m in plan.catalog_models}
    items: list[tuple[str | None, Any, Any]]
    if plan.case.kind == "stt":
        config = plan.stt_config
        items = [(None, config, r) for _, r in out.of("started")]
    else:
        items = [
            (cid, plan.contexts.get(cid), r)
            for cid in plan.contexts
            for _, r in out.of("opened", cid)
        ]
    if not items or items[0][1] is None:
        return failed(f"no started/opened to check ({summary(out)})")
    for cid, config, resp in items:
        assert config is not None
        wanted = config.model or _default_name(plan)
        if resp.model != wanted:
            return failed(f"{_what(cid)} names model {resp.model!r}, expected {wanted!r}")
        native = caps[wanted].native_sample_rate_hz if wanted in caps else 0
        if resp.model_sample_rate_hz != native:
            return failed(
                f"{_what(cid)} says native rate {resp.model_sample_rate_hz} Hz, "
                f"Capabilities says {native} Hz"
            )
        if cid is None and config.request_id and resp.request_id != config.request_id:
            return failed(f"started request_id {resp.request_id!r}, sent {config.request_id!r}")
        if cid is None and not config.request_id and not resp.request_id:
            # The proto: "the request_id from the config, or a generated one".
            return failed("started has no request_id: the config had none, so one is generated")
        if cid is None and not resp.session_id:
            return failed("started has no session_id (the server's id of the stream)")
        if cid is not None:
            voices = list(caps[wanted].voices) if wanted in caps else []
            voice = config.voice or (voices[0] if voices else "")
            if voice and resp.voice != voice:
                return failed(f"opened {cid!r} voice {resp.voice!r}, expected {voice!r}")
    return passed(f"{_what(items[0][0])}: model {items[0][2].model}, {native} Hz as advertised")


def _what(cid: str | None) -> str:
    return "started" if cid is None else f"opened {cid!r}"


def _default_name(plan: Plan) -> str:
    for model in plan.catalog_models:
        kind = 1 if plan.case.kind == "stt" else 2
        if model.kind == kind and model.is_default:
            return model.name
    return "(no model is advertised as default)"


@prop("error_caps")
def error_caps(out: Outcome, plan: Plan) -> Verdict:
    """Every error of the stream echoes at most what the contract allows: its status message
    (the gRPC status details, the google.rpc.Status message, an in-band Error's message) at most
    256 bytes, at most 8 field violations, each field at most 96 bytes and each description at
    most 128. There must be an error to check."""
    errors: list[tuple[str, str, list[tuple[str, str]]]] = []  # (where, message, violations)
    if out.code.name != "OK":
        errors.append(("the gRPC status details", out.details, []))
        raw = out.trailers.get(DETAILS_TRAILER)
        if isinstance(raw, bytes):
            try:
                status = status_pb2.Status.FromString(raw)
            except DecodeError as exc:
                return failed(f"{DETAILS_TRAILER} is not a google.rpc.Status ({exc})")
            violations = []
            for detail in status.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    violations += [(v.field, v.description) for v in bad.field_violations]
            errors.append((DETAILS_TRAILER, status.message, violations))
    for r in out.responses:  # in-band errors: a ContextError, a rejected update
        kind = r.WhichOneof("response")
        if kind == "error":
            error, where = r.error.error, f"the ContextError of {r.context_id!r}"
        elif kind == "update_config_ack" and not r.update_config_ack.accepted:
            error, where = r.update_config_ack.error, "a rejected UpdateConfigAck"
        else:
            continue
        pairs = [(v.field, v.description) for v in error.field_violations]
        errors.append((where, error.message, pairs))
    if not errors:
        return failed(f"no error to check ({summary(out)})")
    longest = 0
    for where, message, violations in errors:
        size = len(message.encode())
        longest = max(longest, size)
        if size > MAX_MESSAGE_BYTES:
            return failed(f"{where}: a message of {size} bytes, at most {MAX_MESSAGE_BYTES}")
        if len(violations) > MAX_VIOLATIONS:
            return failed(f"{where}: {len(violations)} field violations, at most {MAX_VIOLATIONS}")
        for field, description in violations:
            if len(field.encode()) > MAX_FIELD_BYTES:
                return failed(
                    f"{where}: a field of {len(field.encode())} bytes ({field[:40]!r}...), "
                    f"at most {MAX_FIELD_BYTES}"
                )
            if len(description.encode()) > MAX_DESCRIPTION_BYTES:
                return failed(
                    f"{where}: a description of {len(description.encode())} bytes for "
                    f"{field[:40]!r}, at most {MAX_DESCRIPTION_BYTES}"
                )
    most = max(len(v) for _, _, v in errors)
    return passed(
        f"{len(errors)} error forms within the caps: longest message {longest} bytes, "
        f"{most} field violations at most"
    )
