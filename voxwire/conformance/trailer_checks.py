"""The timing trailers every stream ends with, OK or not (docs/contract.md, "Timings")."""

from __future__ import annotations

import re

from google.protobuf.message import DecodeError

from voxwire.conformance.driver import Outcome
from voxwire.conformance.plan import Plan
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
