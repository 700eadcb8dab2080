"""Benchmark STT model: the ``stt_pocketsphinx`` interface, no recognition.

Per ``execute()`` batch it sleeps ``compute_ms`` once (a GPU runs one batch for all its
sequences; sleeping burns no CPU), then answers every request with one final response:
``ready`` on START, an ``interim`` showing one more word of ``transcript`` per audio request
(when interim results are on), a ``final`` with evenly spaced word timings over the audio of
the utterance on finalize/END, ``finalize_ack`` and ``config_ack``. State per sequence is a few
integers, so 100+ concurrent sequences cost next to nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

Event = dict[str, Any]


class RequestError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(slots=True)
class BenchSequence:
    interim_results: bool
    samples: int = 0
    utterance: int = 0
    utterance_start: int = 0
    words_shown: int = 0
    last_seen: float = field(default_factory=time.monotonic)


def _scalar(request: Any, name: str) -> int:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return int(tensor.as_numpy().reshape(-1)[0]) if tensor is not None else 0


def _control(request: Any) -> dict[str, Any] | None:
    tensor = pb_utils.get_input_tensor_by_name(request, "CONTROL")
    if tensor is None or tensor.as_numpy().size == 0:
        return None
    values = tensor.as_numpy().reshape(-1)
    try:
        body = json.loads(values[0])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError("INVALID_MESSAGE", f"CONTROL is not UTF-8 JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise RequestError("INVALID_MESSAGE", "CONTROL must be one JSON object")
    return body


def _response(events: list[Event], compute_us: int) -> Any:
    encoded = [json.dumps(e, separators=(",", ":")).encode("utf-8") for e in events]
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor("EVENTS", np.array(encoded, dtype=np.object_).reshape(1, -1)),
            pb_utils.Tensor("COMPUTE_US", np.array([[compute_us]], dtype=np.uint64)),
        ]
    )


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        model_config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in model_config.get("parameters", {}).items()}
        self._rate = int(params["voxwire.sample_rate_hz"])
        self._compute_s = float(params.get("compute_ms", "2")) / 1000.0
        self._words = params.get("transcript", "the quick brown fox").split()
        idle_us = int(model_config["sequence_batching"].get("max_sequence_idle_microseconds", 0))
        self._idle_s = max(idle_us / 1e6, 1.0) + 5.0
        self._sequences: dict[int, BenchSequence] = {}
        self._next_eviction = time.monotonic()

    def execute(self, requests: list[Any]) -> None:
        began = time.perf_counter_ns()
        real = []
        for request in requests:
            if _scalar(request, "CORRID") == 0 and not _scalar(request, "START"):
                # Null request padding an idle slot of the direct strategy: nothing to answer.
                request.get_response_sender().send(
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
                )
            else:
                real.append(request)
        if real:
            time.sleep(self._compute_s)
        for request in real:
            self._answer(request, began)
        self._evict_idle()
        return None

    def _answer(self, request: Any, began: int) -> None:
        try:
            events = self._events(request)
        except RequestError as exc:
            events = [{"type": "error", "reason": exc.reason, "message": exc.message}]
        except Exception as exc:
            events = [
                {"type": "error", "reason": "INTERNAL", "message": f"{type(exc).__name__}: {exc}"}
            ]
        compute_us = (time.perf_counter_ns() - began) // 1000
        try:
            request.get_response_sender().send(
                _response(events, compute_us), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
            )
        except Exception as exc:
            pb_utils.Logger.log_warn(f"bench_stt: response lost: {exc}")

    def _events(self, request: Any) -> list[Event]:
        corrid = _scalar(request, "CORRID")
        control = _control(request) or {}
        end = bool(_scalar(request, "END"))
        events: list[Event] = []
        if _scalar(request, "START"):
            config = control.get("config") or {}
            interim = config.get("interim_results", False) if isinstance(config, dict) else None
            if not isinstance(interim, bool):
                raise RequestError("INVALID_CONFIG", "config.interim_results must be a boolean")
            self._sequences[corrid] = BenchSequence(interim_results=interim)
            vocabulary = config.get("vocabulary") or []
            events.append({"type": "ready", "vocabulary": self._vocabulary_statuses(vocabulary)})
        sequence = self._sequences.get(corrid)
        if sequence is None:
            if end and control.get("cancel") is True:
                return []
            # Lost (this instance restarted or evicted it): retryable, not the client's fault.
            raise RequestError("BACKEND_UNAVAILABLE", f"sequence {corrid} is not known here")
        sequence.last_seen = time.monotonic()
        if control.get("cancel") is True:
            del self._sequences[corrid]
            return []
        audio = pb_utils.get_input_tensor_by_name(request, "AUDIO")
        received = audio.as_numpy().size if audio is not None else 0
        sequence.samples += received
        if received and sequence.interim_results:
            sequence.words_shown = min(sequence.words_shown + 1, len(self._words))
            events.append(self._interim(sequence))
        if "finalize" in control:
            events += self._final(sequence, from_finalize=True)
            audio_ms = sequence.samples * 1000 // self._rate
            events.append(
                {"type": "finalize_ack", "id": str(control["finalize"]), "audio_ms": audio_ms}
            )
        if "update_config" in control:
            body = control["update_config"] if isinstance(control["update_config"], dict) else {}
            events.append(
                {
                    "type": "config_ack",
                    "id": str(body.get("id", "")),
                    "accepted": True,
                    "vocabulary": self._vocabulary_statuses(body.get("vocabulary") or []),
                }
            )
        if end:
            events += self._final(sequence, from_finalize=False)
            del self._sequences[corrid]
        return events

    @staticmethod
    def _vocabulary_statuses(vocabulary: Any) -> list[Event]:
        entries = vocabulary if isinstance(vocabulary, list) else []
        phrases = [str(e.get("phrase", "")) if isinstance(e, dict) else "" for e in entries]
        detail = "benchmark model: no vocabulary support"
        return [{"phrase": p, "status": "rejected", "detail": detail} for p in phrases]

    def _interim(self, sequence: BenchSequence) -> Event:
        return {
            "type": "interim",
            "utterance": sequence.utterance,
            "text": " ".join(self._words[: sequence.words_shown]),
            "start_ms": sequence.utterance_start * 1000 // self._rate,
            "end_ms": sequence.samples * 1000 // self._rate,
        }

    def _final(self, sequence: BenchSequence, from_finalize: bool) -> list[Event]:
        start, end = sequence.utterance_start, sequence.samples
        if end <= start:
            return []
        step = (end - start) / len(self._words)
        words = [
            {
                "word": word,
                "start_ms": int((start + i * step) * 1000 // self._rate),
                "end_ms": int((start + (i + 1) * step) * 1000 // self._rate),
                "confidence": 1.0,
            }
            for i, word in enumerate(self._words)
        ]
        final = {
            "type": "final",
            "utterance": sequence.utterance,
            "text": " ".join(self._words),
            "start_ms": start * 1000 // self._rate,
            "end_ms": end * 1000 // self._rate,
            "confidence": 1.0,
            "words": words,
            "from_finalize": from_finalize,
        }
        sequence.utterance += 1
        sequence.utterance_start = end
        sequence.words_shown = 0
        return [final]

    def _evict_idle(self) -> None:
        now = time.monotonic()
        if now < self._next_eviction:
            return
        self._next_eviction = now + 5.0
        for corrid in [c for c, s in self._sequences.items() if now - s.last_seen > self._idle_s]:
            del self._sequences[corrid]
