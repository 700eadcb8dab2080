"""Fuzz cases: reproducible streams of raw request bytes, valid and hostile.

``make_case(seed, index, plan)`` is a pure function: the same seed and index always give the
same case, so any case of a run is reproduced alone with ``--seed S --case N``. A case is the
serialized requests of one stream (sent as they are, so they may be corrupt), how the client
ends it, and whether it is a valid stream that must complete correctly.

Families (the ``family`` field; each hostile one starts from a valid stream and breaks it):

    valid        a correct stream: STT config, real audio, finalize, close; TTS contexts with
                 text, flushes and closes
    random_bytes one or more messages replaced by random bytes
    bitflip      1-8 bits flipped in one serialized message
    truncate     one serialized message cut short
    huge         1 MB strings, 600 vocabulary entries, 70 KB chunks, a 5 MB message,
                 300 pronunciations
    nan_audio    PCM_F32LE audio holding NaN or infinity (STT)
    bad_utf8     invalid UTF-8 where a string goes (model, ids, text)
    order        broken message orders: audio before config, two configs, messages after
                 close, text before open, cancel/flush/close of unknown contexts, double open
    cancel       the client cancels the call after k messages
    disconnect   the client closes its channel (the connection) after k messages
    deadline     a short gRPC deadline on a stream that then waits
"""

from __future__ import annotations

import random
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxwire.v1 import audio_pb2, stream_pb2, synthesis_pb2, transcription_pb2

STT_METHOD = "/voxwire.v1.Transcription/StreamingTranscribe"
TTS_METHOD = "/voxwire.v1.Synthesis/StreamingSynthesize"

SttReq = transcription_pb2.StreamingTranscribeRequest
TtsReq = synthesis_pb2.StreamingSynthesizeRequest

FAMILIES = (
    "valid",
    "random_bytes",
    "bitflip",
    "truncate",
    "huge",
    "nan_audio",
    "bad_utf8",
    "order",
    "cancel",
    "disconnect",
    "deadline",
)
# Share of each family in a run; "valid" streams run beside the hostile ones.
WEIGHTS = {
    "valid": 20,
    "random_bytes": 12,
    "bitflip": 12,
    "truncate": 8,
    "huge": 6,
    "nan_audio": 4,
    "bad_utf8": 6,
    "order": 12,
    "cancel": 8,
    "disconnect": 4,
    "deadline": 4,
}
MB = 1024 * 1024
_MARK = b"\x1d\x1e\x1f"  # placeholder bytes that the bad_utf8 family overwrites
_BAD_UTF8 = [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82"]


@dataclass(frozen=True, slots=True)
class Plan:
    """What the target offers: models by kind (from its Capabilities) and the valid audio."""

    stt_models: tuple[str, ...]
    tts_models: tuple[str, ...]
    tts_rates: dict[str, int] = field(default_factory=dict)  # native rate per TTS model
    audio: bytes = b""  # PCM16 mono at audio_rate_hz
    audio_rate_hz: int = 16000
    families: tuple[str, ...] = FAMILIES
    # What the STT models do, by their capabilities (None: every model, as the reference
    # adapter's): valid streams ask interim results only of a model that makes them, and
    # nan_audio goes to a model that takes PCM_F32LE (a server that takes PCM16 only answers
    # UNSUPPORTED_ENCODING before it looks at the samples; with none, the family is left out).
    # Against the example server (examples/minimal_server.py) these were judged failures.
    interim_models: frozenset[str] | None = None
    f32_models: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Case:
    index: int
    service: str  # "stt" or "tts"
    family: str
    detail: str
    messages: tuple[bytes, ...]
    valid: bool = False
    ending: str = "half_close"  # half_close | cancel | disconnect | wait (deadline)
    cut_after: int = -1  # cancel/disconnect after this many messages were written
    deadline_s: float | None = None
    model: str = ""

    @property
    def method(self) -> str:
        return STT_METHOD if self.service == "stt" else TTS_METHOD

    @property
    def size(self) -> int:
        return sum(len(m) for m in self.messages)


def read_audio(path: Path) -> tuple[bytes, int]:
    """PCM16 mono WAV -> (bytes, rate), the valid audio of a fuzz run (both fuzzers). Raises
    ValueError for other formats."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise ValueError(f"{path}: need 16-bit mono PCM")
        return wav.readframes(wav.getnframes()), wav.getframerate()


def tone(rate_hz: int = 16000, seconds: float = 1.0) -> bytes:
    """A 440 Hz tone with a little noise, PCM16: valid audio when no speech file is given."""
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    noise = np.random.default_rng(0).normal(0, 0.01, t.size)
    wave = 0.3 * np.sin(2 * np.pi * 440 * t) + noise
    return (wave * 32767).astype("<i2").tobytes()


def _stt_valid(rng: random.Random, plan: Plan, model: str) -> list[bytes]:
    fmt = audio_pb2.AudioFormat(
        encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=plan.audio_rate_hz
    )
    config = transcription_pb2.TranscriptionConfig(
        model=model,
        audio_format=fmt,
        # The draw is made either way: a seed's cases stay the same.
        interim_results=rng.random() < 0.5
        and (plan.interim_models is None or model in plan.interim_models),
        word_timestamps=rng.random() < 0.5,
    )
    out = [SttReq(config=config).SerializeToString()]
    chunk = plan.audio_rate_hz // 10 * 2  # 100 ms
    limit = min(len(plan.audio), chunk * rng.randint(2, 12))
    for i, pos in enumerate(range(0, limit, chunk)):
        out.append(SttReq(audio=plan.audio[pos : pos + chunk]).SerializeToString())
        if i == 3 and rng.random() < 0.5:
            finalize = transcription_pb2.Finalize(finalize_id=f"f{i}")
            out.append(SttReq(finalize=finalize).SerializeToString())
        if rng.random() < 0.1:
            out.append(SttReq(keep_alive=stream_pb2.KeepAlive()).SerializeToString())
    if rng.random() < 0.5:
        out.append(SttReq(close=transcription_pb2.CloseStream()).SerializeToString())
    return out


_SENTENCES = ["Hello there. ", "This is a test of the system. ", "How are you today? ", "Fine, "]


def _tts_open(cid: str, model: str, rate: int, **kw: object) -> bytes:
    config = synthesis_pb2.SynthesisContextConfig(
        model=model,
        output_format=audio_pb2.AudioFormat(
            encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=rate
        ),
        **kw,  # type: ignore[arg-type]
    )
    return TtsReq(context_id=cid, open=config).SerializeToString()


def _text(cid: str, text: str) -> bytes:
    return TtsReq(context_id=cid, append=synthesis_pb2.AppendText(text=text)).SerializeToString()


def _flush(cid: str, flush_id: str) -> bytes:
    return TtsReq(context_id=cid, flush=synthesis_pb2.Flush(flush_id=flush_id)).SerializeToString()


def _close(cid: str) -> bytes:
    return TtsReq(context_id=cid, close=synthesis_pb2.CloseContext()).SerializeToString()


def _cancel(cid: str) -> bytes:
    return TtsReq(context_id=cid, cancel=synthesis_pb2.Cancel()).SerializeToString()


def _tts_valid(rng: random.Random, plan: Plan, model: str) -> list[bytes]:
    rate = rng.choice([plan.tts_rates.get(model, 16000), 16000, 8000])
    out: list[bytes] = []
    contexts = [f"c{i}" for i in range(rng.randint(1, 2))]
    for cid in contexts:
        out.append(_tts_open(cid, model, rate, word_timestamps=rng.random() < 0.5))
    for cid in contexts:
        for _ in range(rng.randint(1, 2)):
            text = rng.choice(_SENTENCES)
            out.append(_text(cid, text))
        if rng.random() < 0.5:
            out.append(_flush(cid, "x"))
        if rng.random() < 0.7:
            out.append(_close(cid))
    return out


def _flip(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    if not data:
        return bytes([rng.randrange(256)]), "one random byte for an empty message"
    buf = bytearray(data)
    bits = rng.randint(1, 8)
    for _ in range(bits):
        pos = rng.randrange(len(buf) * 8)
        buf[pos // 8] ^= 1 << (pos % 8)
    return bytes(buf), f"{bits} bit(s) flipped"


def _huge_stt(rng: random.Random, plan: Plan, model: str) -> tuple[list[bytes], str]:
    base = _stt_valid(rng, plan, model)
    fmt = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=16000)
    pick = rng.randrange(6)
    if pick == 0:
        cfg = transcription_pb2.TranscriptionConfig(model=model, audio_format=fmt)
        cfg.request_id = "r" * MB
        return [SttReq(config=cfg).SerializeToString(), *base[1:]], "1 MB request_id"
    if pick == 1:
        cfg = transcription_pb2.TranscriptionConfig(model=model, audio_format=fmt)
        cfg.vocabulary.extend(
            transcription_pb2.VocabularyEntry(phrase=f"word{i}") for i in range(600)
        )
        return [SttReq(config=cfg).SerializeToString(), *base[1:]], "600 vocabulary entries"
    if pick == 2:
        return [*base[:2], SttReq(audio=b"\x01\x00" * 35_000).SerializeToString()], "70 KB chunk"
    if pick == 3:
        return [*base[:1], SttReq(audio=b"\x00" * 5 * MB).SerializeToString()], "5 MB message"
    if pick == 4:
        fin = SttReq(finalize=transcription_pb2.Finalize(finalize_id="f" * MB)).SerializeToString()
        return [*base[:2], fin], "1 MB finalize_id"
    cfg = transcription_pb2.TranscriptionConfig(model="m" * MB, audio_format=fmt)
    return [SttReq(config=cfg).SerializeToString(), *base[1:]], "1 MB model name"


def _huge_tts(rng: random.Random, plan: Plan, model: str) -> tuple[list[bytes], str]:
    rate = plan.tts_rates.get(model, 16000)
    opened = _tts_open("c", model, rate)
    pick = rng.randrange(5)
    if pick == 0:
        text = _text("c", "word " * 14_000)
        return [opened, text], "70 KB text"
    if pick == 1:
        texts = [_text("c", "la " * 3000) for _ in range(8)]
        return [opened, *texts], "72 KB of pending text in 9 KB appends"
    if pick == 2:
        empty = synthesis_pb2.SynthesisContextConfig()
        return [TtsReq(context_id="c" * MB, open=empty).SerializeToString()], "1 MB context id"
    if pick == 3:
        config = synthesis_pb2.SynthesisContextConfig(model=model)
        config.pronunciations.extend(
            synthesis_pb2.PronunciationEntry(
                grapheme=f"w{i}", phonemes="h@l", alphabet=synthesis_pb2.PHONEME_ALPHABET_ESPEAK
            )
            for i in range(300)
        )
        return [TtsReq(context_id="c", open=config).SerializeToString()], "300 pronunciations"
    big = _text("c", "x" * 5 * MB)
    return [opened, big], "5 MB message"


def _nan_audio(rng: random.Random, model: str) -> tuple[list[bytes], str]:
    fmt = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_PCM_F32LE, sample_rate_hz=16000)
    config = SttReq(config=transcription_pb2.TranscriptionConfig(model=model, audio_format=fmt))
    samples = np.zeros(1600, dtype="<f4")
    bad = rng.choice([np.nan, np.inf, -np.inf])
    samples[rng.randrange(samples.size)] = bad
    audio = SttReq(audio=samples.tobytes()).SerializeToString()
    return [config.SerializeToString(), audio], f"f32 audio with {bad}"


def _bad_utf8(rng: random.Random, service: str, model: str, rate: int) -> tuple[list[bytes], str]:
    bad = rng.choice(_BAD_UTF8)
    mark = _MARK[: len(bad)] if len(bad) <= len(_MARK) else _MARK + b"\x1c" * (len(bad) - 3)
    text = mark.decode()
    if service == "stt":
        fmt = audio_pb2.AudioFormat(
            encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=16000
        )
        where = rng.choice(["model", "language", "finalize_id"])
        if where == "finalize_id":
            cfg = transcription_pb2.TranscriptionConfig(model=model, audio_format=fmt)
            msgs = [
                SttReq(config=cfg).SerializeToString(),
                SttReq(finalize=transcription_pb2.Finalize(finalize_id=text)).SerializeToString(),
            ]
        else:
            cfg = transcription_pb2.TranscriptionConfig(model=model, audio_format=fmt)
            setattr(cfg, where, text)
            msgs = [SttReq(config=cfg).SerializeToString()]
    else:
        where = rng.choice(["context_id", "text", "voice"])
        if where == "context_id":
            msgs = [_tts_open(text, model, rate)]
        elif where == "voice":
            msgs = [_tts_open("c", model, rate, voice=text)]
        else:
            msgs = [_tts_open("c", model, rate), _text("c", f"Hi {text} there. ")]
    msgs = [m.replace(mark, bad) for m in msgs]
    return msgs, f"{bad!r} in {where}"


def _order_stt(rng: random.Random, plan: Plan, model: str) -> tuple[list[bytes], str]:
    base = _stt_valid(rng, plan, model)
    audio = SttReq(audio=b"\x00\x00" * 160).SerializeToString()
    close = SttReq(close=transcription_pb2.CloseStream()).SerializeToString()
    pick = rng.randrange(5)
    if pick == 0:
        return [audio, *base], "audio before config"
    if pick == 1:
        return [base[0], base[0], *base[1:]], "two configs"
    if pick == 2:
        return [*base[:2], close, audio, audio], "audio after close"
    if pick == 3:
        return [b"", *base], "an empty message first"
    return [*base[:2], base[0]], "config again mid-stream"


def _order_tts(rng: random.Random, plan: Plan, model: str) -> tuple[list[bytes], str]:
    rate = plan.tts_rates.get(model, 16000)
    opened = _tts_open("c", model, rate)
    text = _text("c", "Hello there. ")
    pick = rng.randrange(6)
    if pick == 0:
        return [text, opened, text], "text before open"
    if pick == 1:
        return [_cancel("zz")], "cancel unknown context"
    if pick == 2:
        flush = _flush("zz", "f")
        return [opened, flush, text], "flush unknown context"
    if pick == 3:
        return [opened, opened, text], "open twice"
    if pick == 4:
        close = _close("c")
        return [opened, text, close, close, text], "close twice, text after close"
    return [TtsReq(append=synthesis_pb2.AppendText(text="x")).SerializeToString()], "no context id"


def make_case(seed: int, index: int, plan: Plan) -> Case:
    """The case ``index`` of the run with ``seed`` (pure and reproducible)."""
    rng = random.Random(f"{seed}:{index}")
    f32_models = plan.stt_models if plan.f32_models is None else plan.f32_models
    families = [f for f in FAMILIES if f in plan.families and (f != "nan_audio" or f32_models)]
    family = rng.choices(families, weights=[WEIGHTS[f] for f in families])[0]
    service = "stt" if rng.random() < 0.5 and plan.stt_models else "tts"
    if service == "tts" and not plan.tts_models:
        service = "stt"
    if family == "nan_audio":
        service = "stt"
    stt_models = f32_models if family == "nan_audio" else plan.stt_models
    model = rng.choice(stt_models if service == "stt" else plan.tts_models)
    rate = plan.tts_rates.get(model, 16000)
    valid = _stt_valid(rng, plan, model) if service == "stt" else _tts_valid(rng, plan, model)
    kw: dict[str, object] = {}
    detail = ""
    msgs = valid
    if family == "valid":
        kw["valid"] = True
    elif family == "random_bytes":
        n = rng.randint(1, 3)
        msgs = list(valid)
        for _ in range(n):
            junk = rng.randbytes(rng.randint(0, 300))
            msgs[rng.randrange(len(msgs))] = junk
        detail = f"{n} message(s) replaced by random bytes"
    elif family == "bitflip":
        at = rng.randrange(len(valid))
        flipped, detail = _flip(rng, valid[at])
        msgs = [*valid[:at], flipped, *valid[at + 1 :]]
        detail += f" in message {at}"
    elif family == "truncate":
        at = rng.randrange(len(valid))
        cut = rng.randrange(max(1, len(valid[at])))
        msgs = [*valid[:at], valid[at][:cut], *valid[at + 1 :]]
        detail = f"message {at} cut to {cut} of {len(valid[at])} bytes"
    elif family == "huge":
        msgs, detail = (_huge_stt if service == "stt" else _huge_tts)(rng, plan, model)
    elif family == "nan_audio":
        msgs, detail = _nan_audio(rng, model)
    elif family == "bad_utf8":
        msgs, detail = _bad_utf8(rng, service, model, rate)
    elif family == "order":
        msgs, detail = (_order_stt if service == "stt" else _order_tts)(rng, plan, model)
    elif family in ("cancel", "disconnect"):
        kw["ending"] = family
        kw["cut_after"] = rng.randint(0, len(valid))
        detail = f"{family} after {kw['cut_after']} of {len(valid)} messages"
    elif family == "deadline":
        kw["ending"] = "wait"
        kw["deadline_s"] = round(rng.uniform(0.05, 1.5), 3)
        msgs = valid[: rng.randint(1, len(valid))]
        detail = f"deadline {kw['deadline_s']} s, {len(msgs)} messages, never half-closed"
    return Case(
        index=index,
        service=service,
        family=family,
        detail=detail,
        messages=tuple(msgs),
        model=model,
        **kw,  # type: ignore[arg-type]
    )
