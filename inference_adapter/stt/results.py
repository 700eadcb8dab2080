"""What a speech model's events become on the wire: transcript results, update acks,
vocabulary outcomes (docs/design/spine.md, "Triton model interface"). Pure functions;
``TranscriptionSession`` owns the positions they are given.

A model's values are checked, never trusted: times are clamped by the caller's ``ms``,
confidences to [0, 1], word timings to monotonic and inside their result (docs/contract.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from voxwire import errors
from voxwire.v1 import errors_pb2, transcription_pb2

_STATUS = {
    "added": transcription_pb2.VocabularyOutcome.STATUS_ADDED,
    "known": transcription_pb2.VocabularyOutcome.STATUS_KNOWN,
    "rejected": transcription_pb2.VocabularyOutcome.STATUS_REJECTED,
}


def outcomes(items: list[dict[str, Any]]) -> list[transcription_pb2.VocabularyOutcome]:
    """The model's vocabulary outcomes (an unknown status is STATUS_UNSPECIFIED)."""
    return [
        transcription_pb2.VocabularyOutcome(
            phrase=str(item.get("phrase", "")),
            status=_STATUS.get(
                item.get("status", ""), transcription_pb2.VocabularyOutcome.STATUS_UNSPECIFIED
            ),
            detail=str(item.get("detail", "")),
        )
        for item in items
    ]


def update_ack(event: dict[str, Any], client_id: str) -> transcription_pb2.UpdateConfigAck:
    """The client's ack of a `config_ack` event; a refusal carries its error (a reason the
    contract does not know is INVALID_CONFIG)."""
    ack = transcription_pb2.UpdateConfigAck(
        update_id=client_id,
        accepted=bool(event.get("accepted")),
        vocabulary=outcomes(event.get("vocabulary", [])),
    )
    if not ack.accepted:
        reason = str(event.get("reason") or "INVALID_CONFIG")
        if f"ERROR_REASON_{reason}" not in errors_pb2.ErrorReason.keys():
            reason = "INVALID_CONFIG"
        ack.error.CopyFrom(
            errors.error_for_reason(reason, str(event.get("message", ""))).to_proto()
        )
    return ack


def transcript_result(
    event: dict[str, Any],
    utterance_id: str,
    ms: Callable[[Any], int],
    *,
    final: bool,
    words: bool,
    into: transcription_pb2.TranscriptResult | None = None,
) -> transcription_pb2.TranscriptResult:
    """A result event as a TranscriptResult; ``ms`` turns a model time into a session
    position. Words only on a final result, and only when ``words`` (word timestamps) is on.

    ``into``: fill this (empty) message in place, e.g. the ``result`` field of a response
    being built: half the cost of building a message and copying it into the response (one
    result per audio chunk)."""
    end = ms(event.get("end_ms"))
    start = min(ms(event.get("start_ms")), end)
    result = transcription_pb2.TranscriptResult() if into is None else into
    result.utterance_id = utterance_id
    result.is_final = final
    result.transcript = str(event.get("text", ""))
    result.start_ms = start
    result.end_ms = end
    if final:
        result.confidence = confidence(event.get("confidence", 0.0))
        result.from_finalize = bool(event.get("from_finalize", False))
        if words:
            last = start
            for w in event.get("words", []):
                # The contract: word timings are monotonic and inside the result; a model
                # that overlaps or overshoots is clamped, never passed on.
                w_start = min(max(ms(w.get("start_ms")), last), end)
                w_end = min(max(ms(w.get("end_ms")), w_start), end)
                result.words.add(
                    word=str(w.get("word", "")),
                    start_ms=w_start,
                    end_ms=w_end,
                    confidence=confidence(w.get("confidence", 0.0)),
                )
                last = w_end
    return result


def utterance_index(value: Any) -> int:
    """A model's utterance number (a non-negative int). Raises ModelError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise errors.ModelError(f"model sent utterance {value!r}")
    return value


def confidence(value: Any) -> float:
    """A confidence in [0, 1] (a model's NaN, infinity or junk becomes 0)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return min(1.0, max(0.0, number)) if number == number else 0.0
