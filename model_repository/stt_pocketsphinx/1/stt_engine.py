"""Streaming recognition on pocketsphinx: one ``RecognitionSession`` per Triton sequence.

Sans-I/O core of the ``stt_pocketsphinx`` model (``model.py`` is the thin Triton adapter): a
session takes audio and controls and returns voxwire STT events (``docs/design/spine.md``,
"STT models"). Nothing here knows about Triton, so it runs the same in any process.

Pipeline per session::

    PCM16 --(exact 30 ms frames)--> Endpointer (VAD) --speech frames--> Decoder --> events

Times are milliseconds of audio since the sequence start, counted in samples, never wall clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from pocketsphinx import Decoder, Endpointer, Vad

Event = dict[str, Any]

FRAMES_PER_SECOND = 100  # pocketsphinx's default -frate: seg() frame indices are 10 ms apart
BYTES_PER_SAMPLE = 2
# Starting cepstral means (pocketsphinx -cmninit) of a sequence's decoder, by the band of the
# client's audio: config.pbtxt's cmn_init and cmn_init_narrowband, derived by
# tools/calibrate_cmn.py from eSpeak NG speech (these defaults are its output).
DEFAULT_CMN_INIT = "62.93,1.23,-2.29,23.12,-13.01,2.70,-6.22,-18.26,-2.02,-5.81,5.84,-2.44,-3.37"
DEFAULT_CMN_INIT_NARROWBAND = (
    "53.43,28.15,-42.81,46.28,-31.40,-6.94,3.70,-45.21,9.10,-19.76,-2.56,4.63,-21.48"
)
# Client audio below this rate is phone-band (8 kHz G.711 carries 300-3400 Hz): after the
# adapter's resampling to 16 kHz its spectrum has nothing above 4 kHz. 11.025 and 12 kHz audio
# decodes better from the wideband prior (WER 0.33 and 0.17 against 0.88 and 0.80).
NARROWBAND_BELOW_HZ = 11025
# Audio declared at a wideband rate may still be phone audio the client upsampled. The first
# utterance's first BAND_PROBE_MS of speech are held back and measured before anything is
# decoded: energy at 4.5-7.5 kHz relative to the voice band (300-3400 Hz), Hann-windowed,
# measured 2.9e-4 to 6.1e-2 on the wideband fixtures and 1.4e-9 to 2.6e-7 on the same speech
# through the phone channel, G.711 and soxr back to 16 kHz (tests/fixtures/speech); the
# threshold sits between, on a log scale (a cruder client resampler that leaves images above
# 4 kHz reads as wideband, as the declared rate says). A probe with no voice-band energy to
# speak of waits for more audio, up to BAND_PROBE_MAX_MS; then, or when the utterance ends
# first, the band stays wideband.
BAND_PROBE_MS = 300
BAND_PROBE_MAX_MS = 2000
BAND_PROBE_MIN_POWER = 3.5e7  # per Hann frame of 512: a voice band at about -60 dBFS rms
NARROWBAND_RATIO = 1e-5
# CI phones of the bundled en-us acoustic model (its mdef, without SIL/filler phones): a
# pronunciation with any other phone would make Decoder.add_word fail after the LM changed.
ARPABET_PHONES = frozenset(
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH "
    "UH UW V W Y Z ZH".split()
)
_ALTERNATE_SUFFIX = re.compile(r"\(\d+\)$")  # cmudict alternative pronunciations: "read(2)"
_VAD_MODES = (Vad.LOOSE, Vad.MEDIUM_LOOSE, Vad.MEDIUM_STRICT, Vad.STRICT)


class SessionError(Exception):
    """A request the session rejects; ``reason`` is a voxwire error reason string."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def error_event(reason: str, message: str) -> Event:
    return {"type": "error", "reason": reason, "message": message}


def _invalid(message: str) -> SessionError:
    return SessionError("INVALID_CONFIG", message)


def _bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise _invalid(f"{key} must be a boolean")
    return value


def _int(body: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _invalid(f"{key} must be an integer in [{low}, {high}]")
    return value


@dataclass(frozen=True, slots=True)
class Endpointing:
    enabled: bool = True
    silence_ms: int = 500  # becomes the Endpointer window: trailing silence that ends speech
    vad_aggressiveness: int = 0  # 0..3 = Vad.LOOSE .. Vad.STRICT

    def patched(self, body: Any) -> Endpointing:
        """This setting with the keys present in ``body`` replaced (absent = unchanged)."""
        if not isinstance(body, dict):
            raise _invalid("endpointing must be an object")
        unknown = set(body) - {"enabled", "silence_ms", "vad_aggressiveness"}
        if unknown:
            raise _invalid(f"unknown endpointing keys: {sorted(unknown)}")
        return replace(
            self,
            enabled=_bool(body, "enabled", self.enabled),
            # The Endpointer needs a window of at least a few 30 ms frames.
            silence_ms=_int(body, "silence_ms", self.silence_ms, 100, 5000),
            vad_aggressiveness=_int(body, "vad_aggressiveness", self.vad_aggressiveness, 0, 3),
        )

    def endpointer(self, sample_rate: int) -> Endpointer:
        return Endpointer(
            window=self.silence_ms / 1000.0,
            vad_mode=_VAD_MODES[self.vad_aggressiveness],
            sample_rate=sample_rate,
        )


@dataclass(frozen=True, slots=True)
class VocabularyEntry:
    phrase: str
    boost: float | None
    pronunciation: str | None


@dataclass(frozen=True, slots=True)
class VocabularyLimits:
    """The model's vocabulary limits: its config's voxwire.max_* parameters, which the adapter
    validates against and publishes too (one source)."""

    max_entries: int = 500
    max_phrase_chars: int = 100
    max_boost: float = 20.0

    @classmethod
    def from_parameters(cls, params: dict[str, str]) -> VocabularyLimits:
        return cls(
            max_entries=int(params.get("voxwire.max_vocabulary_entries", cls.max_entries)),
            max_phrase_chars=int(params.get("voxwire.max_phrase_chars", cls.max_phrase_chars)),
            max_boost=float(params.get("voxwire.max_vocabulary_boost", cls.max_boost)),
        )


def parse_vocabulary(body: Any, limits: VocabularyLimits) -> tuple[VocabularyEntry, ...]:
    """Validate the structure of a vocabulary list (per-entry problems become statuses later)."""
    if not isinstance(body, list):
        raise _invalid("vocabulary must be a list")
    if len(body) > limits.max_entries:
        raise _invalid(f"vocabulary has more than {limits.max_entries} entries")
    entries = []
    for index, item in enumerate(body):
        if not isinstance(item, dict) or not isinstance(item.get("phrase"), str):
            raise _invalid(f"vocabulary[{index}] needs a string phrase")
        if not 0 < len(item["phrase"].strip()) <= limits.max_phrase_chars:
            raise _invalid(f"vocabulary[{index}].phrase must be 1..{limits.max_phrase_chars} chars")
        boost = item.get("boost")
        if boost is not None and (
            isinstance(boost, bool)
            or not isinstance(boost, int | float)
            or not 0 <= boost <= limits.max_boost
        ):
            raise _invalid(
                f"vocabulary[{index}].boost must be a number in [0, {limits.max_boost:g}]"
            )
        pronunciation = item.get("pronunciation")
        if pronunciation is not None and not isinstance(pronunciation, str):
            raise _invalid(f"vocabulary[{index}].pronunciation must be a string")
        entries.append(VocabularyEntry(item["phrase"], boost, pronunciation or None))
    return tuple(entries)


@dataclass(frozen=True, slots=True)
class SessionConfig:
    interim_results: bool = False
    word_timestamps: bool = True
    endpointing: Endpointing = Endpointing()
    vocabulary: tuple[VocabularyEntry, ...] = ()
    limits: VocabularyLimits = VocabularyLimits()
    # The client's sample rate before the adapter resampled it (0: not said): picks the prior.
    source_sample_rate_hz: int = 0

    @property
    def narrowband(self) -> bool:
        return 0 < self.source_sample_rate_hz < NARROWBAND_BELOW_HZ


def language_supported(tag: Any, languages: tuple[str, ...]) -> bool:
    """BCP-47 match, case-insensitive: an exact tag, or a bare primary language ("en")."""
    if not isinstance(tag, str):
        return False
    wanted = tag.lower()
    return any(wanted in (have.lower(), have.lower().split("-")[0]) for have in languages)


def parse_session_config(
    body: Any, languages: tuple[str, ...], limits: VocabularyLimits = VocabularyLimits()
) -> SessionConfig:
    """The START request's ``config`` object; absent keys take the model defaults.

    Raises:
        SessionError: INVALID_CONFIG for a wrong type, range or unsupported language.
    """
    if body is None:
        return SessionConfig(limits=limits)
    if not isinstance(body, dict):
        raise _invalid("config must be an object")
    language = body.get("language")
    if language is not None and not language_supported(language, languages):
        raise _invalid(f"language {language!r} is not supported (have {', '.join(languages)})")
    return SessionConfig(
        interim_results=_bool(body, "interim_results", False),
        word_timestamps=_bool(body, "word_timestamps", True),
        endpointing=Endpointing().patched(body.get("endpointing") or {}),
        vocabulary=parse_vocabulary(body.get("vocabulary") or [], limits),
        limits=limits,
        source_sample_rate_hz=_int(body, "source_sample_rate_hz", 0, 0, 384_000),
    )


def boost_to_weight(boost: float | None) -> float:
    """LM unigram weight for an added word: ``boost`` b multiplies its probability by 10^(b/5).

    NGramModel.add_word's weight is the word's probability relative to an average unigram
    (1.0 = average), so b=0 is neutral, b=5 is x10 and b=20 is x10^4.
    """
    return 10.0 ** ((boost or 0.0) / 5.0)


class PooledDecoder:
    """A pocketsphinx Decoder plus what the pool must know about it."""

    def __init__(self, sample_rate: int, cmn_init: str) -> None:
        # Creating a Decoder loads the acoustic model, LM and dictionary (~0.4 s, ~40 MB).
        self.decoder = Decoder(samprate=sample_rate, cmninit=cmn_init, loglevel="ERROR")
        self.custom_words = False  # dictionary/LM changed: never hand it to another sequence


class DecoderPool:
    """Reuses decoders across sequences of one model instance (one process, one thread).

    Pocketsphinx adapts its cepstral mean (CMN) live and slowly, so the first seconds of a
    sequence decode against the decoder's starting mean. A reused decoder would start from the
    mean of the previous sequence's line, making one caller's words depend on another's audio
    (a 16 kHz stream after G.711 ones lost words); ``acquire`` resets it to the prior of the new
    sequence's band instead. Within a sequence the mean keeps adapting across utterances.
    """

    def __init__(
        self,
        sample_rate: int,
        prewarm: int,
        max_idle: int,
        cmn_init: str = DEFAULT_CMN_INIT,
        cmn_init_narrowband: str = DEFAULT_CMN_INIT_NARROWBAND,
    ) -> None:
        self.sample_rate = sample_rate
        self.cmn_init = cmn_init
        self.cmn_init_narrowband = cmn_init_narrowband
        self._max_idle = max(max_idle, prewarm)  # each idle decoder holds ~40 MB
        self._idle = [PooledDecoder(sample_rate, cmn_init) for _ in range(prewarm)]

    def acquire(self, narrowband: bool = False) -> PooledDecoder:
        pooled = self._idle.pop() if self._idle else PooledDecoder(self.sample_rate, self.cmn_init)
        self.reset(pooled, narrowband)
        return pooled

    def reset(self, pooled: PooledDecoder, narrowband: bool) -> None:
        """A new front end starting from the band's prior (~0.2 ms), not just set_cmn: the live
        CMN's running sums and the noise-removal filter's estimates also carry over (set_cmn
        alone left a fresh decoder and a reused one hearing "read on the" and "please call me"
        in the same audio). Only between utterances."""
        decoder = pooled.decoder
        decoder.config["cmninit"] = self.cmn_init_narrowband if narrowband else self.cmn_init
        decoder.reinit_feat()

    def release(self, pooled: PooledDecoder, healthy: bool = True) -> None:
        if healthy and not pooled.custom_words and len(self._idle) < self._max_idle:
            self._idle.append(pooled)


_PROBE_FRAME = 512  # 32 ms at 16 kHz; Hann-windowed, hop of half a frame (Welch's method)
_HANN = np.hanning(_PROBE_FRAME)


def _band_powers(samples: np.ndarray, rate: int) -> tuple[float, float, int]:
    """Summed power at 300-3400 Hz and 4.5-7.5 kHz over Hann-windowed frames, and the frame
    count. The window matters: a plain FFT of a segment leaks its voice-band energy into the
    high band at about -30 dB through the segment's edges, which made upsampled phone audio
    look wideband."""
    hop = _PROBE_FRAME // 2
    count = 1 + (samples.size - _PROBE_FRAME) // hop if samples.size >= _PROBE_FRAME else 0
    if not count:
        return 0.0, 0.0, 0
    index = np.arange(_PROBE_FRAME)[None, :] + hop * np.arange(count)[:, None]
    power = np.abs(np.fft.rfft(samples[index].astype(np.float64) * _HANN, axis=1)) ** 2
    freq = np.fft.rfftfreq(_PROBE_FRAME, 1.0 / rate)
    voice = float(power[:, (freq >= 300) & (freq < 3400)].sum())
    high = float(power[:, (freq >= 4500) & (freq < 7500)].sum())
    return voice, high, count


def _clean_word(token: str) -> str | None:
    """A lexical word from a pocketsphinx token, or None for fillers (<s>, <sil>, [NOISE])."""
    if not token or token[0] in "<[" or token.startswith("++"):
        return None
    return _ALTERNATE_SUFFIX.sub("", token)


class VocabularyPlan:
    """Statuses for a vocabulary list, and the words to add (applied at an utterance boundary).

    Pocketsphinx 5 can add unknown words with a pronunciation and a unigram weight; it exposes
    no way to raise the probability of a word that is already in the LM.
    """

    def __init__(self, decoder: Decoder, entries: tuple[VocabularyEntry, ...]) -> None:
        self.statuses: list[Event] = []
        self.additions: list[tuple[str, str, float]] = []
        planned: set[str] = set()
        for entry in entries:
            status, detail = self._plan(decoder, entry, planned)
            self.statuses.append({"phrase": entry.phrase, "status": status, "detail": detail})

    def _plan(self, decoder: Decoder, entry: VocabularyEntry, planned: set[str]) -> tuple[str, str]:
        words = entry.phrase.lower().split()
        if not words:
            return "rejected", "empty phrase"
        unknown = [w for w in words if w not in planned and decoder.lookup_word(w) is None]
        if not unknown:
            if entry.boost:
                return "known", "already in the dictionary; this engine cannot boost known words"
            return "known", "already in the dictionary"
        if entry.pronunciation is None:
            return "rejected", f"unknown word(s) {', '.join(unknown)} and no pronunciation given"
        if len(words) > 1:
            return "rejected", "a pronunciation can only be given for a single word"
        # Stress digits (AH0, EY1) are cmudict notation; the acoustic model's phones have none.
        phones = [re.sub(r"[0-2]$", "", p) for p in entry.pronunciation.upper().split()]
        bad = [p for p in phones if p not in ARPABET_PHONES]
        if not phones or bad:
            return "rejected", f"not ARPABET phones of this model: {' '.join(bad) or '(none)'}"
        planned.add(words[0])
        self.additions.append((words[0], " ".join(phones), boost_to_weight(entry.boost)))
        weight = boost_to_weight(entry.boost)
        return "added", f"added with LM unigram weight {weight:g}"

    def apply(self, pooled: PooledDecoder) -> None:
        """Add the planned words; never call while the decoder is inside an utterance."""
        decoder = pooled.decoder
        for index, (word, phones, weight) in enumerate(self.additions):
            pooled.custom_words = True
            # The LM entry goes first so it carries our weight; Decoder.add_word then finds the
            # word in the LM (it would otherwise add it with weight 1.0). Only the last addition
            # rebuilds the search (~0.1 s each time).
            decoder.get_lm().add_word(word, weight)
            decoder.add_word(word, phones, index == len(self.additions) - 1)


class RecognitionSession:
    """One Triton sequence: audio in, STT events out (see the module docstring).

    Utterances: with endpointing on, the Endpointer opens an utterance when speech starts and
    closes it when ``silence_ms`` of non-speech follows; finalize/END close it early. With
    endpointing off, the first audio opens an utterance and only finalize/END close it.
    """

    def __init__(self, pool: DecoderPool, config: SessionConfig) -> None:
        self._pool = pool
        self._rate = pool.sample_rate
        self._config = config
        self._pooled = pool.acquire(config.narrowband)
        self._decoder = self._pooled.decoder
        self._samples_in = 0  # every sample received: the clock of all event times
        self._utterance = 0
        # Endpointer state: the next frame fed maps to sample ``_ep_fed``; the next speech frame
        # it returns (it returns them ``silence_ms`` late) maps to sample ``_ep_out``.
        self._endpointing = config.endpointing
        self._pending_endpointing: Endpointing | None = None
        self._endpointer: Endpointer | None = None
        self._remainder = b""  # < one frame: the Endpointer takes exact frame_bytes only
        self._ep_origin = 0  # sample offset of the current Endpointer's first frame
        self._ep_fed = 0
        self._ep_out = 0
        # Decoder utterance state.
        self._in_utterance = False
        self._utt_start = 0
        self._utt_samples = 0
        self._to_decode: list[bytes] = []
        self._utt_started = False  # the decoder's start_utt waits for the first audio decoded
        # Declared wideband on a wideband model: the band is measured on the first speech.
        self._band_open = not config.narrowband and self._rate >= 16000
        self._last_interim = ""
        self._pending_vocabulary: VocabularyPlan | None = None
        self._new_endpointer(config.endpointing, origin=0)

    # -- public API: each call returns the events to send for that request ----------------
    def start(self) -> list[Event]:
        plan = VocabularyPlan(self._decoder, self._config.vocabulary)
        plan.apply(self._pooled)
        return [{"type": "ready", "vocabulary": plan.statuses}]

    def feed(self, audio: np.ndarray) -> list[Event]:
        events: list[Event] = []
        if audio.size == 0:
            return events
        data = audio.astype("<i2", copy=False).tobytes()
        self._samples_in += audio.size
        if self._endpointer is None:
            self._feed_without_endpointer(data, events)
        else:
            self._feed_endpointer(data, events)
        self._flush_decoder()
        self._maybe_interim(events)
        return events

    def finalize(self, finalize_id: str) -> list[Event]:
        events = self._flush(from_finalize=True)
        events.append(
            {"type": "finalize_ack", "id": finalize_id, "audio_ms": self._ms(self._samples_in)}
        )
        return events

    def update_config(self, body: Any) -> list[Event]:
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise SessionError("INVALID_MESSAGE", "update_config needs an object with a string id")
        ack: Event = {"type": "config_ack", "id": body["id"], "accepted": True, "vocabulary": []}
        try:
            endpointing = self._endpointing
            if "endpointing" in body:
                endpointing = endpointing.patched(body["endpointing"])
            plan = None
            if "vocabulary" in body:
                vocabulary = parse_vocabulary(body["vocabulary"], self._config.limits)
                plan = VocabularyPlan(self._decoder, vocabulary)
        except SessionError as exc:
            ack.update(accepted=False, reason=exc.reason, message=exc.message)
            return [ack]
        if plan is not None:
            ack["vocabulary"] = plan.statuses
            self._pending_vocabulary = plan
        if endpointing != self._endpointing:
            self._pending_endpointing = endpointing
        events: list[Event] = []
        self._at_boundary(events)
        return [*events, ack]

    def end(self) -> list[Event]:
        """END: pending speech becomes a final result; the session is then closed."""
        events = self._flush(from_finalize=False)
        self.close()
        return events

    def close(self, healthy: bool = True) -> None:
        if self._pooled is None:
            return
        if self._in_utterance and self._utt_started:
            self._decoder.end_utt()
        self._in_utterance = False
        self._pool.release(self._pooled, healthy)
        self._pooled = None  # type: ignore[assignment]

    # -- endpointer --------------------------------------------------------------------------
    def _feed_endpointer(self, data: bytes, events: list[Event]) -> None:
        assert self._endpointer is not None
        endpointer = self._endpointer
        frame_bytes = endpointer.frame_bytes
        buffer = self._remainder + data
        usable = len(buffer) - len(buffer) % frame_bytes
        self._remainder = buffer[usable:]
        for offset in range(0, usable, frame_bytes):
            was_speech = endpointer.in_speech
            speech = endpointer.process(buffer[offset : offset + frame_bytes])
            self._ep_fed += frame_bytes // BYTES_PER_SAMPLE
            if speech is not None:
                self._on_speech(speech, was_speech, events)
            if self._endpointer is not endpointer:  # swapped at a boundary inside _on_speech
                rest = buffer[offset + frame_bytes : usable] + self._remainder
                self._remainder = b""
                if self._endpointer is None:
                    self._feed_without_endpointer(rest, events)
                else:
                    self._feed_endpointer(rest, events)
                return

    def _feed_without_endpointer(self, data: bytes, events: list[Event]) -> None:
        if data:
            if not self._in_utterance:
                start = self._samples_in - len(data) // BYTES_PER_SAMPLE
                self._open_utterance(start, events, announce=False)
            self._to_decode.append(data)

    def _on_speech(self, speech: bytes, was_speech: bool, events: list[Event]) -> None:
        endpointer = self._endpointer
        assert endpointer is not None
        if not was_speech:
            # The first speech frame returned is the one at speech_start (seconds since this
            # Endpointer's first frame); later ones follow contiguously.
            self._ep_out = self._ep_origin + round(endpointer.speech_start * self._rate)
        if not self._in_utterance:
            self._open_utterance(self._ep_out, events, announce=not was_speech)
        self._to_decode.append(speech)
        self._ep_out += len(speech) // BYTES_PER_SAMPLE
        if not endpointer.in_speech:
            end_at = self._ep_origin + round(endpointer.speech_end * self._rate)
            utterance = self._utterance
            self._close_utterance(events, from_finalize=False)
            events.append(
                {"type": "utterance_end", "utterance": utterance, "at_ms": self._ms(end_at)}
            )
            self._at_boundary(events)

    def _new_endpointer(self, endpointing: Endpointing, origin: int) -> None:
        """Replace the Endpointer; ``origin`` is the sample its first frame will be."""
        self._endpointing = endpointing
        self._endpointer = endpointing.endpointer(self._rate) if endpointing.enabled else None
        self._ep_origin = self._ep_fed = origin

    def _at_boundary(self, events: list[Event]) -> None:
        """Apply deferred config once no utterance is open and the VAD is not in speech.

        Exception: turning endpointing on while it is off applies at once (with it off, an
        utterance only ends on finalize/END, so waiting could mean waiting forever).
        """
        endpointer = self._endpointer
        pending = self._pending_endpointing
        if pending is not None and endpointer is None and not self._remainder:
            self._new_endpointer(pending, origin=self._samples_in)
            self._pending_endpointing = pending = None
        if self._in_utterance or (endpointer is not None and endpointer.in_speech):
            return
        if self._pending_vocabulary is not None:
            self._pending_vocabulary.apply(self._pooled)
            self._pending_vocabulary = None
        if pending is not None:
            # Frames fed so far belong to the old Endpointer; the remainder goes to the new one.
            origin = self._ep_fed if endpointer is not None else self._samples_in
            self._new_endpointer(pending, origin=origin)
            self._pending_endpointing = None

    # -- decoder -------------------------------------------------------------------------------
    def _open_utterance(self, start_sample: int, events: list[Event], announce: bool) -> None:
        self._utt_started = False
        self._in_utterance = True
        self._utt_start = start_sample
        self._utt_samples = 0
        self._last_interim = ""
        if announce:
            events.append(
                {
                    "type": "speech_started",
                    "utterance": self._utterance,
                    "at_ms": self._ms(start_sample),
                }
            )

    def _flush_decoder(self, force: bool = False) -> None:
        """Decode what is pending; ``force`` (the utterance ends) also ends a band probe."""
        if not self._to_decode or (self._band_open and not self._probe_band(force)):
            return
        self._start_utt()
        data = b"".join(self._to_decode)
        self._to_decode.clear()
        self._decoder.process_raw(data, False, False)
        self._utt_samples += len(data) // BYTES_PER_SAMPLE

    def _start_utt(self) -> None:
        if not self._utt_started:
            self._decoder.start_utt()
            self._utt_started = True

    def _probe_band(self, force: bool) -> bool:
        """Decide the band from the held speech (see BAND_PROBE_MS); True once decided."""
        held = sum(len(b) for b in self._to_decode) // BYTES_PER_SAMPLE
        if held < self._rate * BAND_PROBE_MS // 1000 and not force:
            return False
        held_audio = np.frombuffer(b"".join(self._to_decode), dtype="<i2")
        voice, high, frames = _band_powers(held_audio, self._rate)
        faint = voice < BAND_PROBE_MIN_POWER * max(frames, 1)
        if faint and not force and held < self._rate * BAND_PROBE_MAX_MS // 1000:
            return False
        self._band_open = False
        if not faint and high < NARROWBAND_RATIO * voice:
            self._pool.reset(self._pooled, narrowband=True)
        return True

    def _close_utterance(self, events: list[Event], from_finalize: bool) -> None:
        self._flush_decoder(force=True)
        self._start_utt()  # an utterance with no audio decoded still ends (an empty final)
        decoder = self._decoder
        decoder.end_utt()
        self._in_utterance = False
        final = self._final_event(from_finalize)
        if final is not None:
            events.append(final)
        self._utterance += 1

    def _final_event(self, from_finalize: bool) -> Event | None:
        utt_end = self._utt_start + self._utt_samples
        words: list[Event] = []
        for segment in self._decoder.seg():
            word = _clean_word(segment.word)
            if word is None:
                continue
            start = self._utt_start + segment.start_frame * self._rate // FRAMES_PER_SECOND
            end = self._utt_start + (segment.end_frame + 1) * self._rate // FRAMES_PER_SECOND
            words.append(
                {
                    "word": word,
                    "start_ms": self._ms(start),
                    "end_ms": self._ms(min(end, utt_end)),
                    "confidence": round(min(max(float(segment.prob), 0.0), 1.0), 4),
                }
            )
        if not words:
            return None
        return {
            "type": "final",
            "utterance": self._utterance,
            "text": " ".join(w["word"] for w in words),
            "start_ms": self._ms(self._utt_start),
            "end_ms": self._ms(utt_end),
            "confidence": round(sum(w["confidence"] for w in words) / len(words), 4),
            "words": words if self._config.word_timestamps else [],
            "from_finalize": from_finalize,
        }

    def _maybe_interim(self, events: list[Event]) -> None:
        if not (self._config.interim_results and self._in_utterance and self._utt_started):
            return
        hypothesis = self._decoder.hyp()
        if hypothesis is None:
            return
        words = [w for w in (_clean_word(t) for t in hypothesis.hypstr.split()) if w]
        text = " ".join(words)
        if text and text != self._last_interim:
            self._last_interim = text
            events.append(
                {
                    "type": "interim",
                    "utterance": self._utterance,
                    "text": text,
                    "start_ms": self._ms(self._utt_start),
                    "end_ms": self._ms(self._utt_start + self._utt_samples),
                }
            )

    def _flush(self, from_finalize: bool) -> list[Event]:
        """finalize/END: everything received so far goes into a final result now."""
        events: list[Event] = []
        endpointer = self._endpointer
        cut_speech = endpointer is not None and endpointer.in_speech
        if cut_speech:
            assert endpointer is not None
            # end_stream hands back the speech the Endpointer still holds (its window) plus
            # the sub-frame remainder; a fresh Endpointer then takes the audio that follows.
            # pocketsphinx 5.1 raises IndexError on an empty buffer here, so an empty
            # remainder is sent as one zero sample (0.06 ms of silence).
            speech = endpointer.end_stream(self._remainder or b"\x00\x00")
            self._remainder = b""
            if speech:
                if not self._in_utterance:
                    self._open_utterance(self._ep_out, events, announce=False)
                self._to_decode.append(speech)
        # Not in speech: the remainder stays for the Endpointer so its clock stays exact.
        if self._in_utterance:
            self._close_utterance(events, from_finalize)
        self._to_decode.clear()
        if cut_speech:
            self._new_endpointer(self._endpointing, origin=self._samples_in)
        self._at_boundary(events)
        return events

    def _ms(self, samples: int) -> int:
        return samples * 1000 // self._rate
