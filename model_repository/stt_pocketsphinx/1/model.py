"""Triton adapter of ``stt_pocketsphinx``: sequence requests in, voxwire STT events out.

Interface: ``docs/design/spine.md``, "STT models". The recognition itself lives in
``stt_engine.py`` (no Triton there). This file maps each request of a sequence (keyed by the
``CORRID`` control input) to its ``RecognitionSession`` and answers every request with exactly
one response carrying the final flag, so requests of one sequence are answered in order.

Robustness: one request's failure is an ``error`` event for that request only; the session is
dropped if the engine raised unexpectedly, and other sequences on this instance carry on.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from stt_engine import (
    DEFAULT_CMN_INIT,
    DEFAULT_CMN_INIT_NARROWBAND,
    DecoderPool,
    Event,
    RecognitionSession,
    SessionError,
    VocabularyLimits,
    error_event,
    parse_session_config,
)

_EVICT_EVERY_S = 5.0


@dataclass(slots=True)
class _Sequence:
    session: RecognitionSession
    last_seen: float = field(default_factory=time.monotonic)


def _parameters(model_config: dict[str, Any]) -> dict[str, str]:
    return {k: v["string_value"] for k, v in model_config.get("parameters", {}).items()}


def _scalar(request: Any, name: str) -> int:
    # Under the sequence batcher with max_batch_size > 0 every tensor has a leading batch
    # dimension of 1 per request: [[value]].
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return int(tensor.as_numpy().reshape(-1)[0]) if tensor is not None else 0


def _control(request: Any) -> dict[str, Any] | None:
    tensor = pb_utils.get_input_tensor_by_name(request, "CONTROL")
    if tensor is None:
        return None
    values = tensor.as_numpy().reshape(-1)
    if values.size == 0:
        return None
    raw = values[0]
    try:
        body = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SessionError("INVALID_MESSAGE", f"CONTROL is not UTF-8 JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise SessionError("INVALID_MESSAGE", "CONTROL must be one JSON object")
    return body


def _audio(request: Any) -> np.ndarray:
    tensor = pb_utils.get_input_tensor_by_name(request, "AUDIO")
    if tensor is None:
        return np.zeros(0, dtype=np.int16)
    return tensor.as_numpy().reshape(-1)


def _response(events: list[Event], compute_us: int) -> Any:
    encoded = [json.dumps(e, separators=(",", ":")).encode("utf-8") for e in events]
    # Leading batch dimension again (max_batch_size > 0): EVENTS [1, n], COMPUTE_US [1, 1].
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor("EVENTS", np.array(encoded, dtype=np.object_).reshape(1, -1)),
            pb_utils.Tensor("COMPUTE_US", np.array([[compute_us]], dtype=np.uint64)),
        ]
    )


def _check_control(control: dict[str, Any] | None, start: bool, end: bool) -> None:
    """Reject malformed controls before any audio of the request is consumed."""
    if control is None:
        return
    allowed = {"config"} if start else set()
    allowed |= {"finalize", "update_config", "cancel"}
    unknown = set(control) - allowed
    if unknown:
        raise SessionError("INVALID_MESSAGE", f"unexpected CONTROL keys: {sorted(unknown)}")
    if "finalize" in control and not isinstance(control["finalize"], str):
        raise SessionError("INVALID_MESSAGE", "finalize must carry a string id")
    if "cancel" in control and (control["cancel"] is not True or not end):
        raise SessionError("INVALID_MESSAGE", '{"cancel": true} is only valid with END')


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        model_config = json.loads(args["model_config"])
        params = _parameters(model_config)
        self._languages = tuple(
            x.strip() for x in params["voxwire.languages"].split(",") if x.strip()
        )
        # The same parameters the adapter validates against and publishes (one source).
        self._limits = VocabularyLimits.from_parameters(params)
        idle_us = int(model_config["sequence_batching"].get("max_sequence_idle_microseconds", 0))
        # Triton frees an idle sequence's slot after this; we free its decoder a bit later.
        self._idle_s = max(idle_us / 1e6, 1.0) + 5.0
        self._pool = DecoderPool(
            int(params["voxwire.sample_rate_hz"]),
            prewarm=int(params.get("prewarm_decoders", "1")),
            max_idle=int(params.get("max_idle_decoders", "4")),
            cmn_init=params.get("cmn_init", DEFAULT_CMN_INIT),
            cmn_init_narrowband=params.get("cmn_init_narrowband", DEFAULT_CMN_INIT_NARROWBAND),
        )
        self._sequences: dict[int, _Sequence] = {}
        # Sequences whose START was refused (bad config), until their END: a later request of
        # one is the client's error, not a lost sequence.
        self._refused: dict[int, float] = {}
        self._next_eviction = time.monotonic() + _EVICT_EVERY_S

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            self._serve(request)
        self._evict_idle()
        return None

    def finalize(self) -> None:
        for sequence in self._sequences.values():
            sequence.session.close(healthy=False)
        self._sequences.clear()

    def _serve(self, request: Any) -> None:
        began = time.perf_counter_ns()
        sender = request.get_response_sender()
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        corrid = _scalar(request, "CORRID")
        start = bool(_scalar(request, "START"))
        if corrid == 0 and not start:
            # The direct strategy pads unused batch slots with null requests (CORRID 0);
            # Triton discards whatever is sent for them.
            sender.send(flags=final)
            return
        try:
            events = self._process(request, corrid, start, bool(_scalar(request, "END")))
        except SessionError as exc:
            events = [error_event(exc.reason, exc.message)]
        except Exception as exc:  # the engine failed: drop this sequence only
            pb_utils.Logger.log_error(
                f"stt_pocketsphinx: sequence {corrid} failed:\n{traceback.format_exc()}"
            )
            self._drop(corrid, healthy=False)
            events = [error_event("INTERNAL", f"{type(exc).__name__}: {exc}")]
        compute_us = (time.perf_counter_ns() - began) // 1000
        try:
            sender.send(_response(events, compute_us), flags=final)
        except Exception as exc:  # e.g. the client cancelled its stream meanwhile
            pb_utils.Logger.log_warn(
                f"stt_pocketsphinx: response for sequence {corrid} lost: {exc}"
            )

    def _process(self, request: Any, corrid: int, start: bool, end: bool) -> list[Event]:
        control = _control(request)
        _check_control(control, start, end)
        events: list[Event] = []
        if start:
            self._drop(corrid, healthy=True)  # a restarted sequence id starts from scratch
            self._refused.pop(corrid, None)
            try:
                config = parse_session_config(
                    (control or {}).get("config"), self._languages, self._limits
                )
            except SessionError:
                self._refused[corrid] = time.monotonic()
                raise
            session = RecognitionSession(self._pool, config)
            self._sequences[corrid] = _Sequence(session)
            events += session.start()
        sequence = self._sequences.get(corrid)
        if sequence is None:
            refused = self._refused.pop(corrid, None) if end else self._refused.get(corrid)
            if end and control and control.get("cancel"):
                return []
            if refused is not None:
                raise SessionError("INVALID_MESSAGE", f"sequence {corrid}: its START was refused")
            # This instance lost the sequence (it restarted or evicted it): the stream's state
            # is gone, but a new stream works, so it is not the client's fault.
            raise SessionError("BACKEND_UNAVAILABLE", f"sequence {corrid} is not known here")
        sequence.last_seen = time.monotonic()
        if control and control.get("cancel"):
            self._drop(corrid, healthy=True)  # cancel: drop everything silently
            return []
        session = sequence.session
        events += session.feed(_audio(request))
        if control and "finalize" in control:
            events += session.finalize(control["finalize"])
        if control and "update_config" in control:
            events += session.update_config(control["update_config"])
        if end:
            del self._sequences[corrid]
            events += session.end()
        return events

    def _drop(self, corrid: int, healthy: bool) -> None:
        sequence = self._sequences.pop(corrid, None)
        if sequence is not None:
            sequence.session.close(healthy=healthy)

    def _evict_idle(self) -> None:
        now = time.monotonic()
        if now < self._next_eviction:
            return
        self._next_eviction = now + _EVICT_EVERY_S
        stale = [c for c, s in self._sequences.items() if now - s.last_seen > self._idle_s]
        for corrid in stale:
            self._drop(corrid, healthy=True)
        for corrid in [c for c, at in self._refused.items() if now - at > self._idle_s]:
            del self._refused[corrid]
