"""Triton adapter of ``tts_espeak``: one request = one synthesis unit, streamed as it is made.

Interface: ``docs/design/spine.md``, "TTS models". Audio responses are sent from inside eSpeak's
synthesis callback (every ~``buffer_ms`` of audio), so the first one leaves long before the
text is done; ``words`` events follow as soon as a word's end is known (the next word's start);
the last response carries the final flag and a ``done`` (or ``error``) event.

Validation (text size, config, pronunciations, the whole SSML document) happens before the
first sample: an invalid request gets exactly one response, an ``error`` event and no audio.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from espeak_ng import EspeakNG, WordMark
from tts_ssml import SSML_ELEMENTS, ssml_text
from tts_text import MappedText, TextError, parse_pronunciations, plain_text

Event = dict[str, Any]


def _parameters(model_config: dict[str, Any]) -> dict[str, str]:
    return {k: v["string_value"] for k, v in model_config.get("parameters", {}).items()}


def _csv(value: str) -> list[str]:
    return [x.strip() for x in value.split(",") if x.strip()]


def _string_input(request: Any, name: str) -> str:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise TextError("INVALID_MESSAGE", f"missing input {name}")
    values = tensor.as_numpy().reshape(-1)
    if values.size != 1:
        raise TextError("INVALID_MESSAGE", f"{name} must hold exactly one element")
    raw = values[0]
    try:
        return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    except UnicodeDecodeError as exc:
        raise TextError("INVALID_MESSAGE", f"{name} is not UTF-8") from exc


@dataclass(frozen=True, slots=True)
class SynthesisPlan:
    original: str
    mapped: MappedText
    voice: str
    word_timestamps: bool
    ssml: bool = False


# A word of plain text: what a timestamp names (letters or digits, with inner ' and -).
_WORD = re.compile(r"\w+(?:['’-]\w+)*")
# A mark on nothing but white space or punctuation eSpeak pauses on and does not read: no word
# (in SSML, eSpeak marks the "." in "<prosody>go</prosody>.", and it took the pause after "go"
# as a word of its own).
_PAUSE_ONLY = re.compile(r"""[\s.,;:!?…"'“”‘’()\[\]{}«»¡¿–—-]*""")
# What of an SSML document is not its text: tags (an attribute value may hold ">") and
# entity references.
_MARKUP = re.compile(r"""<(?:[^>"']|"[^"]*"|'[^']*')*>|&[^;\s]*;""")


def _blanked(match: re.Match[str]) -> str:
    return " " * len(match.group())


class WordTracker:
    """eSpeak word marks -> voxwire words with original-text offsets.

    A word ends where the next one starts (or at the end of the audio). Marks that map to the
    same original span (the words of an alias, the pieces of a [[phoneme]] block) are one word.

    eSpeak NG marks no word for an unstressed word it speaks joined to the one before ("from
    the" in "Hello from the gateway" is one mark, on "from"). In plain text such words get
    their share of the marked word's time, by length, so that every word has a timestamp
    (truncation reports the words heard from them, and failover counts them); in SSML too,
    from the document's text between the two marks, never its markup ("with <break/> the": one
    unmarked word, "the").
    """

    def __init__(self, plan: SynthesisPlan) -> None:
        self._plan = plan
        # The text words are found in between marks: SSML's markup blanked, so that offsets
        # stay the document's (and a gap that starts inside "&amp;", after its marked "&",
        # finds no "amp").
        self._words_in = _MARKUP.sub(_blanked, plan.original) if plan.ssml else plan.original
        self._pending: tuple[int, int, int] | None = None  # (orig_start, orig_end, start_ms)

    def mark(self, mark: WordMark) -> list[Event]:
        span = self._plan.mapped.to_original(mark.text_index, mark.length)
        if span is None or _PAUSE_ONLY.fullmatch(self._plan.original[span[0] : span[1]]):
            return []
        if self._pending is not None and self._pending[:2] == span:
            return []
        done = self.finish(mark.audio_ms, upto=span[0])
        self._pending = (span[0], span[1], mark.audio_ms)
        return done

    def finish(self, end_ms: int, upto: int | None = None) -> list[Event]:
        """The pending word, ending at ``end_ms``, with the unmarked words after it and before
        ``upto`` (the next mark's start; None: the end of the text)."""
        if self._pending is None:
            return []
        start, end, start_ms = self._pending
        self._pending = None
        end_ms = max(end_ms, start_ms)
        spans = [(start, end)]
        gap = self._words_in[end:upto]
        spans += [(end + m.start(), end + m.end()) for m in _WORD.finditer(gap)]
        chars = sum(e - s for s, e in spans)
        out: list[Event] = []
        at, counted = start_ms, 0
        for s, e in spans:
            counted += e - s
            until = start_ms + (end_ms - start_ms) * counted // chars
            out.append(
                {
                    "word": self._plan.original[s:e],
                    "start_ms": at,
                    "end_ms": until,
                    "text_offset": s,
                    "text_length": e - s,
                }
            )
            at = until
        return out


class StreamingSender:
    """Sends the responses of one request; COMPUTE_US is the model time since the last send."""

    def __init__(self, request: Any) -> None:
        self._sender = request.get_response_sender()
        self._since = time.perf_counter_ns()
        self.cancelled = False

    def send(self, audio: np.ndarray, events: list[Event], final: bool = False) -> None:
        compute_us = (time.perf_counter_ns() - self._since) // 1000
        encoded = [json.dumps(e, separators=(",", ":")).encode("utf-8") for e in events]
        response = pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("AUDIO", audio.astype(np.int16, copy=False)),
                pb_utils.Tensor("EVENTS", np.array(encoded, dtype=np.object_)),
                pb_utils.Tensor("COMPUTE_US", np.array([compute_us], dtype=np.uint64)),
            ]
        )
        self._sender.send(
            response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if final else 0
        )
        self._since = time.perf_counter_ns()

    def close(self) -> None:
        """Only the final flag (after a cancellation; Triton may refuse even that)."""
        try:
            self._sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception:
            pass

    def is_cancelled(self) -> bool:
        self.cancelled = self.cancelled or self._sender.is_cancelled()
        return self.cancelled


_NO_AUDIO = np.zeros(0, dtype=np.int16)
# eSpeak NG keeps how the last text it spoke ended, and a document that opens with an SSML
# paragraph (<p>) starts with a paragraph's pause (238 ms) or not (12 ms) by it: the same
# document came out 226 ms longer after a plain text than after another paragraph. A failover
# or a resume that speaks a document again from its start, skipping by time the audio the
# client has, then joined it in the wrong place. Every request is spoken after this primer
# (thrown away, about its own length in silence), so that it comes out the same whatever the
# instance spoke before.
_PRIMER_SSML = "<speak><p>.</p></speak>"


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        params = _parameters(json.loads(args["model_config"]))
        self._voices = _csv(params["voxwire.voices"])
        self._languages = _csv(params["voxwire.languages"])
        self._language_voices = dict(
            (k.strip().lower(), v.strip())
            for k, v in (x.split(":", 1) for x in _csv(params["language_voices"]))
        )
        # The config is the one source of the limits the adapter checks and publishes too.
        self._max_text_bytes = int(params["voxwire.max_unit_text_bytes"])
        self._max_audio_ms = int(params.get("voxwire.max_unit_audio_ms", "0"))
        self._ssml_elements = frozenset(_csv(params["voxwire.ssml_elements"]))
        if "speak" not in self._ssml_elements or self._ssml_elements - SSML_ELEMENTS:
            raise RuntimeError(
                "voxwire.ssml_elements must include speak and only elements of "
                f"{sorted(SSML_ELEMENTS)}"
            )
        self._engine = EspeakNG(buffer_ms=int(params.get("buffer_ms", "100")))
        declared = int(params["voxwire.sample_rate_hz"])
        if self._engine.sample_rate != declared:
            raise RuntimeError(
                f"eSpeak produces {self._engine.sample_rate} Hz, config says {declared}"
            )
        for voice in self._voices:
            self._engine.set_voice(voice)  # fail at load time, not per request
        self._primer = ssml_text(_PRIMER_SSML, (), SSML_ELEMENTS)

    def execute(self, requests: list[Any]) -> None:
        # eSpeak NG is one global synthesiser per process: requests run one after the other.
        for request in requests:
            self._serve(request)
        return None

    def _serve(self, request: Any) -> None:
        sender = StreamingSender(request)
        try:
            plan = self._plan(request)
            if plan is None:
                sender.send(_NO_AUDIO, [{"type": "done", "samples": 0, "synth_us": 0}], final=True)
                return
            self._synthesize(plan, sender)
        except TextError as exc:
            self._send_error(sender, exc.reason, exc.message)
        except Exception as exc:  # keep the instance alive; this request fails alone
            self._send_error(sender, "INTERNAL", f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _send_error(sender: StreamingSender, reason: str, message: str) -> None:
        try:
            sender.send(
                _NO_AUDIO, [{"type": "error", "reason": reason, "message": message}], final=True
            )
        except Exception as exc:  # the client is gone
            pb_utils.Logger.log_warn(f"tts_espeak: error response lost: {exc}")

    def _plan(self, request: Any) -> SynthesisPlan | None:
        """Validate everything about the request; None means "nothing to speak"."""
        text = _string_input(request, "TEXT")
        if len(text.encode("utf-8")) > self._max_text_bytes:
            raise TextError("TEXT_TOO_LARGE", f"text is over {self._max_text_bytes} bytes")
        try:
            config = json.loads(_string_input(request, "CONFIG") or "{}")
        except json.JSONDecodeError as exc:
            raise TextError("INVALID_CONFIG", f"CONFIG is not JSON: {exc}") from exc
        if not isinstance(config, dict):
            raise TextError("INVALID_CONFIG", "CONFIG must be a JSON object")
        voice = self._voice(config)
        text_format = config.get("text_format", "plain")
        word_timestamps = config.get("word_timestamps", True)
        if text_format not in ("plain", "ssml") or not isinstance(word_timestamps, bool):
            raise TextError(
                "INVALID_CONFIG", "text_format must be plain|ssml, word_timestamps a boolean"
            )
        pronunciations = parse_pronunciations(config.get("pronunciations"))
        if not text.strip():
            return None
        mapped = (
            ssml_text(text, pronunciations, self._ssml_elements)
            if text_format == "ssml"
            else plain_text(text, pronunciations)
        )
        return SynthesisPlan(text, mapped, voice, word_timestamps, ssml=text_format == "ssml")

    def _voice(self, config: dict[str, Any]) -> str:
        """The named voice, else the language's voice, else the default voice."""
        voice, language = config.get("voice"), config.get("language")
        by_language = None
        if language:
            by_language = self._language_voices.get(str(language).lower())
            if by_language is None:
                raise TextError("INVALID_CONFIG", f"language {language!r} is not supported")
        if voice:
            if voice not in self._voices:
                raise TextError(
                    "INVALID_CONFIG", f"unknown voice {voice!r} (have {', '.join(self._voices)})"
                )
            return str(voice)
        return by_language or self._voices[0]

    def _synthesize(self, plan: SynthesisPlan, sender: StreamingSender) -> None:
        words = WordTracker(plan)
        samples = 0
        began = time.perf_counter_ns()
        # At most this many samples (voxwire.max_unit_audio_ms): the rest is never made.
        rate = self._engine.sample_rate
        most = self._max_audio_ms * rate // 1000 if self._max_audio_ms else None
        too_long = False

        def on_chunk(audio: np.ndarray, marks: list[WordMark]) -> bool:
            nonlocal samples, too_long
            if sender.is_cancelled():
                return False  # the client went away: stop synthesising
            if most is not None and samples + audio.size > most:
                too_long = True
                return False
            finished = [w for m in marks for w in words.mark(m)]
            events = (
                [{"type": "words", "words": finished}] if finished and plan.word_timestamps else []
            )
            if audio.size or events:
                sender.send(audio, events)
            samples += audio.size
            return True

        self._engine.set_voice(plan.voice)  # also resets rate/pitch/volume left by SSML
        self._engine.synthesize(self._primer.text, self._primer.flags, lambda audio, marks: True)
        self._engine.synthesize(plan.mapped.text, plan.mapped.flags, on_chunk)
        if sender.cancelled:
            sender.close()
            return
        if too_long:
            # Its words and audio so far went out; the context fails here, saying why.
            raise TextError(
                "TEXT_TOO_LARGE",
                f"the unit's audio runs past this model's limit of {self._max_audio_ms} ms "
                f"(voxwire.max_unit_audio_ms; {samples * 1000 // rate} ms were spoken): "
                "split the SSML document with flushes, or use shorter breaks or faster prosody",
            )
        synth_us = (time.perf_counter_ns() - began) // 1000
        total_ms = samples * 1000 // rate
        last = words.finish(total_ms)
        events: list[Event] = (
            [{"type": "words", "words": last}] if last and plan.word_timestamps else []
        )
        events.append({"type": "done", "samples": samples, "synth_us": synth_us})
        sender.send(_NO_AUDIO, events, final=True)
