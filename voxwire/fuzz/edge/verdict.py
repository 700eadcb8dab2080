"""The edge's promises to a client (docs/edge.md), checked on one fuzz case's outcome.

Every WebSocket session ends with a close from the server within the deadline; a close other
than 1000 comes after one ``error`` event whose ``reason`` is a documented one (never
``INTERNAL``) and whose ``closeCode`` is the close's, with nothing after it (a text frame that
is not UTF-8 too: ``INVALID_MESSAGE`` and 1007, RFC 6455 8.1); a close 1000 comes
after ``summary``, the last message; every ``contextError`` names a documented reason. A valid
session ends with its summary and close 1000, and keeps the contract's order (STT: ``session``,
``started``, acks that never move back, one ``finalizeAck`` per finalize in order; TTS: each
context ``opened`` first, its audio numbered 1, 2, ... and ``done`` naming the last). An HTTP
response is a success or ``{"error": {...}}`` with a reason its endpoint lists (the OpenAPI
document's) whose ``httpStatus`` is the response's, never a 5xx but for a capacity reason.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from voxwire.edge.http_errors import documented
from voxwire.errors import reasons
from voxwire.fuzz.edge.client import Outcome

VERDICTS = (
    "ok",
    "rejected",
    "client_ended",
    "no_close",
    "crash",
    "no_event",
    "mismatch",
    "wrong_reason",
    "disturbed",
)
BAD = ("no_close", "crash", "no_event", "mismatch", "wrong_reason", "disturbed")
_CAPACITY = {"BACKEND_UNAVAILABLE", "OVERLOADED", "DRAINING", "RATE_LIMITED"}
_REASONS = reasons()


def _kind(message: dict[str, Any]) -> str:
    for key in message:
        if key not in ("contextId", "ack"):
            return key
    return "ack" if "ack" in message else ""


def judge(outcome: Outcome) -> tuple[str, str]:
    """(verdict, why) for one case."""
    case = outcome.case
    if case.kind in ("http_stt", "http_tts"):
        return _judge_http(outcome)
    if case.ended_by_client:
        if case.steps and case.steps[-1].op == "close" and not outcome.closed and outcome.connected:
            # The client's close frame must be answered (RFC 6455 5.5.1), not left to time out.
            return "no_close", "the server never answered the client's close frame"
        return "client_ended", ""
    if outcome.handshake_status:
        status = outcome.handshake_status
        return ("crash" if status >= 500 else "rejected"), f"upgrade refused with HTTP {status}"
    if not outcome.closed:
        return "no_close", outcome.client_error or "no close from the server"
    if outcome.not_json:
        return "crash", f"{outcome.not_json} server frames that do not parse"
    kinds = [_kind(m) for m in outcome.messages]
    code = outcome.close_code
    bad_context = _context_errors(outcome.messages)
    if bad_context:
        return bad_context
    if "error" in kinds:
        at = kinds.index("error")
        error = outcome.messages[at]["error"]
        reason = error.get("reason", "")
        if at != len(kinds) - 1:
            return "mismatch", f"{kinds[at + 1 :][:3]} after the error event"
        if reason not in _REASONS or reason == "INTERNAL":
            return "crash", f"error reason {reason!r}: {error.get('message', '')[:120]}"
        documented = _REASONS[reason].ws_close_code
        if reason == "INVALID_MESSAGE" and code == 1007:
            documented = 1007  # text that is not UTF-8 (RFC 6455 8.1), docs/edge.md
        if error.get("closeCode") != code or documented != code:
            return "mismatch", f"{reason}: closeCode {error.get('closeCode')} but closed {code}"
        if case.valid and reason not in _CAPACITY:
            return "disturbed", f"valid session failed: {reason} {error.get('message', '')[:120]}"
        if case.expect and case.expect != reason and reason not in _CAPACITY:
            # (A capacity refusal, the key's rate limit say, comes before the input is read:
            # no verdict on the input then.)
            return "wrong_reason", f"expected {case.expect}, got {reason}"
        return "rejected", reason
    if code == 1011:
        return "crash", "close 1011 (internal error)"
    if code != 1000:
        return "no_event", f"close {code} with no error event (last: {kinds[-3:]})"
    if not kinds or kinds[-1] != "summary":
        return "mismatch", f"close 1000 without a summary last (last: {kinds[-3:]})"
    if case.expect:
        return "wrong_reason", f"expected {case.expect}, the session ended normally"
    if case.valid:
        why = _stt_order(outcome) if case.kind == "stt" else _tts_order(outcome)
        if why:
            return "disturbed", why
    return "ok", ""


def _context_errors(messages: list[dict[str, Any]]) -> tuple[str, str] | None:
    for message in messages:
        error = message.get("contextError", {}).get("error")
        if error is None:
            continue
        reason = error.get("reason", "")
        if reason not in _REASONS or reason == "INTERNAL":
            return "crash", f"contextError reason {reason!r}: {error.get('message', '')[:120]}"
    return None


def _stt_order(outcome: Outcome) -> str:
    kinds = [_kind(m) for m in outcome.messages]
    if kinds[:2] != ["session", "started"]:
        return f"began with {kinds[:2]}"
    through, acks = 0, []
    for message in outcome.messages:
        ack = message.get("ack")
        if ack is not None:
            now = int(ack.get("finalizedThroughMs", 0))
            if now < through:
                return f"ack moved back from {through} to {now} ms"
            through = now
        if "finalizeAck" in message:
            acks.append(message["finalizeAck"].get("finalizeId", ""))
    if acks != list(outcome.case.finalizes):
        return f"finalize acks {acks}, sent {list(outcome.case.finalizes)}"
    summary = outcome.messages[-1]["summary"]
    if through > int(summary.get("audioMs", 0)) + 1:
        return f"acknowledged {through} ms of {summary.get('audioMs', 0)} ms of audio"
    return ""


def _tts_order(outcome: Outcome) -> str:
    if _kind(outcome.messages[0]) != "session":
        return "did not begin with session"
    handles: dict[int, str] = {}
    sequence: dict[str, int] = defaultdict(int)
    ended: dict[str, str] = {}
    for message in outcome.messages:
        cid = message.get("contextId", "")
        if "opened" in message:
            handles[int(message["opened"].get("handle", 0))] = cid
            continue
        frame = message.get("_frame")
        audio = message.get("audio")
        if frame is not None:
            cid, number = handles.get(frame[0], "?"), frame[1]
        elif audio is not None:
            number = int(audio.get("sequenceNumber", 0))
        if frame is not None or audio is not None:
            if cid in ended:
                return f"audio of {cid} after its {ended[cid]}"
            if number != sequence[cid] + 1:
                return f"{cid}: chunk {number} after {sequence[cid]}"
            sequence[cid] = number
        for end in ("done", "cancelled", "contextError"):
            if end in message:
                ended[cid] = end
                last = int(message[end].get("lastSequenceNumber", 0))
                if end == "done" and last != sequence[cid]:
                    return f"{cid}: done names chunk {last}, {sequence[cid]} were sent"
    for cid in outcome.case.contexts:
        if ended.get(cid) != "done":
            return f"context {cid} ended with {ended.get(cid)!r}"
        if sequence[cid] == 0:
            return f"context {cid} had no audio"
    return ""


def _judge_http(outcome: Outcome) -> tuple[str, str]:
    case = outcome.case
    if case.ended_by_client and not outcome.closed:
        return "client_ended", ""  # it left first: whether the gateway stopped, the settle says
    if not outcome.closed:
        return "no_close", outcome.client_error or "no response"
    status = outcome.http_status
    if status < 400:
        if case.valid and status != 200:
            return "disturbed", f"HTTP {status}"
        return "ok", ""
    try:
        error = json.loads(outcome.http_body)["error"]
        reason = error["reason"]
    except (ValueError, KeyError, TypeError):
        return "no_event", f"HTTP {status} without an error body: {outcome.http_body[:80]!r}"
    if (
        reason not in _REASONS
        or reason == "INTERNAL"
        or (status >= 500 and reason not in _CAPACITY)
    ):
        return "crash", f"HTTP {status} {reason}: {error.get('message', '')[:120]}"
    if error.get("httpStatus") != status:
        return "mismatch", f"{reason}: httpStatus {error.get('httpStatus')} but HTTP {status}"
    if not documented("POST", case.path, reason):
        # The OpenAPI document lists each endpoint's reasons (voxwire/edge/http_errors.py).
        return "wrong_reason", f"HTTP {status} {reason}, not one POST {case.path} lists"
    if case.valid and reason not in _CAPACITY:
        return "disturbed", f"valid request failed: HTTP {status} {reason}"
    return "rejected", reason
