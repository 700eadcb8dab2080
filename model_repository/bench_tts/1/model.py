"""Benchmark TTS model: the ``tts_espeak`` interface with a sine tone instead of speech.

Each request becomes ``words x word_ms`` of a ``tone_hz`` tone at ``voxwire.sample_rate_hz``,
sent in ``chunk_ms`` chunks; producing a chunk "takes" ``rtf x chunk_ms`` (asyncio.sleep), so
first-audio latency and pacing look like a real streaming synthesiser without using CPU. Word
events are evenly spaced; the last response carries ``done``.

``execute`` is a coroutine (Python backend, decoupled models): every request runs as its own
task, so one instance serves many requests at once.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

Event = dict[str, Any]
_FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _string_input(request: Any, name: str) -> str:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None or tensor.as_numpy().size != 1:
        raise ValueError(f"{name} must hold exactly one element")
    raw = tensor.as_numpy().reshape(-1)[0]
    return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)


def _response(audio: np.ndarray, events: list[Event], compute_us: int) -> Any:
    encoded = [json.dumps(e, separators=(",", ":")).encode("utf-8") for e in events]
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor("AUDIO", audio.astype(np.int16, copy=False)),
            pb_utils.Tensor("EVENTS", np.array(encoded, dtype=np.object_)),
            pb_utils.Tensor("COMPUTE_US", np.array([compute_us], dtype=np.uint64)),
        ]
    )


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        params = {
            k: v["string_value"] for k, v in json.loads(args["model_config"])["parameters"].items()
        }
        self._rate = int(params["voxwire.sample_rate_hz"])
        self._rtf = float(params.get("rtf", "0.05"))
        self._chunk = int(self._rate * int(params.get("chunk_ms", "100")) / 1000)
        self._word_samples = int(self._rate * int(params.get("word_ms", "300")) / 1000)
        self._tone_hz = float(params.get("tone_hz", "440"))
        self._max_text_bytes = int(params["voxwire.max_unit_text_bytes"])

    async def execute(self, requests: list[Any]) -> None:
        # A decoupled model's async execute runs in the stub's background: the stub adds its
        # future to a set after scheduling it, and removes it when done. An execute that only
        # spawned tasks and returned could finish before the add (Triton 2.51's stub then logs
        # "Cannot remove future from background; KeyError" and keeps the future for ever:
        # 3,958 such lines in one fuzz run); this one ends when its requests are served.
        await asyncio.gather(*(self._serve(request) for request in requests))

    async def _serve(self, request: Any) -> None:
        sender = request.get_response_sender()
        began = time.perf_counter_ns()
        try:
            await self._synthesize(request, sender, began)
        except Exception as exc:
            reason = "INVALID_MESSAGE" if isinstance(exc, ValueError) else "INTERNAL"
            error = {"type": "error", "reason": reason, "message": f"{type(exc).__name__}: {exc}"}
            try:
                sender.send(_response(np.zeros(0, np.int16), [error], 0), flags=_FINAL)
            except Exception as lost:
                pb_utils.Logger.log_warn(f"bench_tts: error response lost: {lost}")

    async def _synthesize(self, request: Any, sender: Any, began: int) -> None:
        text = _string_input(request, "TEXT")
        if len(text.encode("utf-8")) > self._max_text_bytes:
            error = {
                "type": "error",
                "reason": "TEXT_TOO_LARGE",
                "message": f"over {self._max_text_bytes} bytes",
            }
            sender.send(_response(np.zeros(0, np.int16), [error], 0), flags=_FINAL)
            return
        config = json.loads(_string_input(request, "CONFIG") or "{}")
        word_timestamps = (
            bool(config.get("word_timestamps", True)) if isinstance(config, dict) else True
        )
        words = [(m.group(0), m.start()) for m in re.finditer(r"\S+", text)]
        total = len(words) * self._word_samples
        pending = list(enumerate(words))
        sent = 0
        while sent < total:
            last_send = time.perf_counter_ns()
            count = min(self._chunk, total - sent)
            await asyncio.sleep(self._rtf * count / self._rate)  # "synthesis" of this chunk
            audio = self._tone(sent, count)
            sent += count
            done_words = []
            while pending and (pending[0][0] + 1) * self._word_samples <= sent:
                index, (word, offset) = pending.pop(0)
                done_words.append(self._word(index, word, offset))
            events = (
                [{"type": "words", "words": done_words}] if done_words and word_timestamps else []
            )
            compute_us = (time.perf_counter_ns() - last_send) // 1000
            if sender.is_cancelled():
                sender.send(flags=_FINAL)
                return
            sender.send(_response(audio, events, compute_us))
        done = {
            "type": "done",
            "samples": total,
            "synth_us": (time.perf_counter_ns() - began) // 1000,
        }
        sender.send(_response(np.zeros(0, np.int16), [done], 0), flags=_FINAL)

    def _word(self, index: int, word: str, offset: int) -> Event:
        return {
            "word": word,
            "start_ms": index * self._word_samples * 1000 // self._rate,
            "end_ms": (index + 1) * self._word_samples * 1000 // self._rate,
            "text_offset": offset,
            "text_length": len(word),
        }

    def _tone(self, first_sample: int, count: int) -> np.ndarray:
        # Phase follows the absolute sample index, so chunks join without clicks.
        t = (first_sample + np.arange(count)) / self._rate
        return (0.3 * 32767 * np.sin(2 * math.pi * self._tone_hz * t)).astype(np.int16)
