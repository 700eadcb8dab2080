"""Edge fuzz cases: reproducible WebSocket sessions and HTTP requests, valid and hostile.

``make_case(seed, index, plan)`` is a pure function, as for the contract's fuzzer
(voxwire.fuzz.cases): any case of a run is reproduced alone with ``--seed S --case N``. A
WebSocket case is the handshake (path, query, headers, subprotocols) and the steps the client
takes (text frames, raw text frames that may not be UTF-8, binary frames, a close frame of its
own, dropping the connection); an HTTP case is one request.

Families (each hostile one starts from a valid session or request and breaks it):

    valid        STT: config (query or ``start``), real audio in 100 ms frames, finalize,
                 close; TTS: contexts opened, text appended, flushed, closed, closeSession
    mutate       one text frame with characters deleted, inserted, replaced or cut off
    schema       one message with a value of the wrong type, an unknown field, two members of
                 the envelope, a huge number, a lone surrogate, deep nesting, a long string
    bad_utf8     a text frame that is not UTF-8 (INVALID_MESSAGE with close 1007, RFC 6455 8.1)
    binary       STT: audio that ends inside a sample, NaN samples, an empty frame; TTS: a
                 binary frame (the TTS socket takes none)
    oversize     a frame over the 64 KiB limit, text or binary
    order        STT: audio or finalize before the config, two starts, a config in the query
                 and a start, messages after close; TTS: text before open, double open,
                 cancel/flush/truncate of unknown contexts, messages after closeSession
    query        hostile query strings: unknown models and parameters, bad numbers, repeats,
                 long values
    auth         no key, a wrong key, a malformed header, a garbage browser token
    resume       a start that resumes with a forged, garbled or tampered token, or a huge ack
    disconnect   a valid session whose client drops the TCP connection after k steps
    client_close a valid session whose client sends its own close frame after k steps
    upgrade_cut  the upgrade request written raw, whole or cut anywhere, then FIN or a reset
    http_stt     POST /v1/stt with random, truncated and mislabelled bodies and bad queries;
                 valid bodies (WAV, FLAC, Ogg, MP3) in pieces with pauses; long uploads
                 whose client leaves part way through the body or before the answer
    http_tts     POST /v1/tts with broken JSON, schema errors and bad queries
    (about a third of the HTTP cases ask ``Expect: 100-continue`` and send their body only
    after 100 Continue: the answer due is the same)
"""

from __future__ import annotations

import base64
import json
import math
import random
import struct
import urllib.parse
from dataclasses import dataclass, replace
from typing import Any

FAMILIES = (
    "valid",
    "mutate",
    "schema",
    "bad_utf8",
    "binary",
    "oversize",
    "order",
    "query",
    "auth",
    "resume",
    "disconnect",
    "client_close",
    "upgrade_cut",
    "http_stt",
    "http_tts",
)
WEIGHTS = {
    "valid": 18,
    "mutate": 12,
    "schema": 12,
    "bad_utf8": 3,
    "binary": 6,
    "oversize": 3,
    "order": 10,
    "query": 8,
    "auth": 4,
    "resume": 4,
    "disconnect": 6,
    "client_close": 4,
    "upgrade_cut": 3,
    "http_stt": 5,
    "http_tts": 5,
}
MAX_FRAME = 64 * 1024  # docs/edge.md: frames of at most 64 KiB
FORMAT = {"encoding": "AUDIO_ENCODING_PCM_S16LE", "sampleRateHz": 16000}
_SAMPLE_BYTES = {"pcm_s16le": 2, "pcm_f32le": 4, "mulaw": 1, "alaw": 1}
# Valid TTS contexts ask these in turn (by case index: no draw, so seeds keep their cases): a
# model that does not make one has it converted by the gateway (docs/edge.md).
TTS_FORMATS = (
    FORMAT,
    {"encoding": "AUDIO_ENCODING_MULAW", "sampleRateHz": 8000},
    {"encoding": "AUDIO_ENCODING_PCM_F32LE", "sampleRateHz": 48000},
    {"encoding": "AUDIO_ENCODING_PCM_S16LE", "sampleRateHz": 24000},
)
# Families whose every case must end with one reason.
EXPECTED = {"bad_utf8": "INVALID_MESSAGE", "oversize": "CHUNK_TOO_LARGE"}


@dataclass(frozen=True, slots=True)
class Plan:
    """What the target offers: one STT and one TTS model, and the valid audio (PCM16 mono)."""

    stt_model: str = "bench_stt"
    tts_model: str = "bench_tts"
    audio: bytes = b""
    audio_rate_hz: int = 16000
    families: tuple[str, ...] = FAMILIES
    # The same audio compressed, as (content type, file) (``voxwire.fuzz.edge.runner``
    # encodes it; empty: no compressed cases).
    encoded: tuple[tuple[str, bytes], ...] = ()
    # What the STT model does, as the target's /v1/capabilities say (``runner.plan_of``):
    # valid sessions ask interim results only of a model that makes them (a gateway in front
    # of the example server refused them INVALID_CONFIG). Float audio is INVALID_AUDIO for NaN
    # whatever the model takes: the gateway converts what it does not (docs/edge.md).
    interim: bool = True
    # The valid audio in other formats, as (encoding's query name, rate, audio): valid STT
    # sessions send these in turn with ``audio`` (by case index), so that the gateway's
    # conversion for a model that does not take them is fuzzed too (runner.variants).
    variants: tuple[tuple[str, int, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Step:
    """``text`` (str), ``raw_text`` (bytes sent as a text frame), ``binary`` (bytes),
    ``close`` (the client's close frame; data is its code), ``drop`` (abort the TCP
    connection)."""

    op: str
    data: str | bytes | int = b""


# A Case.content_type that sends no Content-Type at all (the client adds none of its own).
NO_CONTENT_TYPE = "(none)"


@dataclass(frozen=True, slots=True)
class Case:
    index: int
    family: str
    kind: str  # stt | tts (WebSocket) | http_stt | http_tts
    detail: str
    query: str = ""
    auth: str = "key"  # key | none | wrong | malformed | token
    protocols: tuple[str, ...] = ()
    steps: tuple[Step, ...] = ()
    body: bytes = b""
    content_type: str = ""
    accept: str = ""
    valid: bool = False
    # Valid STT: the finalize ids sent; valid TTS: the context ids that must each end.
    finalizes: tuple[str, ...] = ()
    contexts: tuple[str, ...] = ()
    expect: str = ""  # a reason, or "close:<code>", that every such case must end with
    ended_by_client: bool = False
    # HTTP: the body goes in pieces of ``piece_bytes`` (0: at once) ``pause_s`` apart, then
    # ``tail`` ``repeats`` times (a long upload from a short case), with its Content-Length;
    # with ``leave_after_s`` the client drops the connection that long after the request
    # began, whatever it had sent or received (``ended_by_client``).
    piece_bytes: int = 0
    pause_s: float = 0.0
    tail: bytes = b""
    repeats: int = 0
    leave_after_s: float = 0.0
    # HTTP: the client sends ``Expect: 100-continue`` and its body only after 100 Continue
    # (curl's way with any body over 1 MiB): the same answer is due either way.
    expect_continue: bool = False

    @property
    def body_bytes(self) -> int:
        return len(self.body) + self.repeats * len(self.tail)

    @property
    def path(self) -> str:
        return {
            "stt": "/v1/stt/stream",
            "tts": "/v1/tts/stream",
            "http_stt": "/v1/stt",
            "http_tts": "/v1/tts",
        }[self.kind]


def make_case(seed: int, index: int, plan: Plan) -> Case:
    rng = random.Random(seed * 1_000_003 + index)
    families = [f for f in FAMILIES if f in plan.families]
    family = rng.choices(families, weights=[WEIGHTS[f] for f in families])[0]
    return _BUILDERS[family](rng, index, plan)


# --- valid sessions -------------------------------------------------------------------------


def _stt_query(plan: Plan, rng: random.Random, encoding: str = "", rate: int = 0) -> str:
    params = {
        "model": plan.stt_model,
        "encoding": encoding or "pcm_s16le",
        "sample_rate": str(rate or plan.audio_rate_hz),
    }
    if rng.random() < 0.5 and plan.interim:  # the draw made either way: seeds stay the same
        params["interim_results"] = "true"
    if rng.random() < 0.3:
        params["word_timestamps"] = "true"
    return urllib.parse.urlencode(params)


def _stt_start(plan: Plan, encoding: str = "", rate: int = 0) -> str:
    name = f"AUDIO_ENCODING_{(encoding or 'pcm_s16le').upper()}"
    config = {
        "model": plan.stt_model,
        "audioFormat": {"encoding": name, "sampleRateHz": rate or plan.audio_rate_hz},
        "interimResults": plan.interim,
    }
    return json.dumps({"start": {"config": config}})


def _stt_valid(rng: random.Random, index: int, plan: Plan, family: str = "valid") -> Case:
    in_query = rng.random() < 0.6
    encoding, rate, audio = ("pcm_s16le", plan.audio_rate_hz, plan.audio)
    # Valid sessions only: the hostile families built on them expect what PCM16 gets (three
    # bytes are misaligned PCM16, not mu-law).
    if family == "valid" and (turn := index % (1 + len(plan.variants))):
        encoding, rate, audio = plan.variants[turn - 1]
    steps: list[Step] = [] if in_query else [Step("text", _stt_start(plan, encoding, rate))]
    chunk = rate // 10 * _SAMPLE_BYTES[encoding]  # 100 ms
    limit = min(len(audio), chunk * rng.randint(3, 15))
    finalizes: list[str] = []
    for i, pos in enumerate(range(0, limit, chunk)):
        piece = audio[pos : pos + chunk]
        if rng.random() < 0.15:  # the same audio as base64 text, for clients without binary
            steps.append(Step("text", json.dumps({"audio": {"data": _b64(piece)}})))
        else:
            steps.append(Step("binary", piece))
        if i == 2 and rng.random() < 0.5:
            finalizes.append(f"f{i}")
            steps.append(Step("text", json.dumps({"finalize": {"finalizeId": f"f{i}"}})))
        if rng.random() < 0.1:
            steps.append(Step("text", '{"keepAlive":{}}'))
    steps.append(Step("text", '{"close":{}}'))
    return Case(
        index,
        family,
        "stt",
        "query config" if in_query else "start config",
        query=_stt_query(plan, rng, encoding, rate) if in_query else "",
        steps=tuple(steps),
        valid=family == "valid",
        finalizes=tuple(finalizes),
    )


_SENTENCES = ["Hello there. ", "This is a test of the system. ", "How are you today? ", "Fine, "]


def _tts_valid(rng: random.Random, index: int, plan: Plan, family: str = "valid") -> Case:
    delivery = rng.choice(["binary", "json"])
    steps: list[Step] = []
    query = f"audio={delivery}&lead_ms=0"
    if rng.random() < 0.3:
        query = ""
        start = {"start": {"audioDelivery": f"AUDIO_DELIVERY_{delivery.upper()}", "lead": "0s"}}
        steps.append(Step("text", json.dumps(start)))
    contexts = [f"c{i}" for i in range(rng.randint(1, 3))]
    fmt = TTS_FORMATS[index % len(TTS_FORMATS)] if family == "valid" else FORMAT
    for cid in contexts:
        steps.append(
            Step("text", _msg(cid, "open", {"model": plan.tts_model, "outputFormat": fmt}))
        )
    for cid in contexts:
        for _ in range(rng.randint(1, 2)):
            steps.append(Step("text", _msg(cid, "append", {"text": rng.choice(_SENTENCES)})))
        if rng.random() < 0.4:
            steps.append(Step("text", _msg(cid, "flush", {"flushId": f"{cid}-f"})))
        steps.append(Step("text", _msg(cid, "close", {})))
    steps.append(Step("text", '{"closeSession":{}}'))
    return Case(
        index,
        family,
        "tts",
        f"{len(contexts)} contexts, {delivery}",
        query=query,
        steps=tuple(steps),
        valid=family == "valid",
        contexts=tuple(contexts),
    )


def _msg(cid: str, kind: str, body: dict[str, Any]) -> str:
    return json.dumps({"contextId": cid, kind: body})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _valid(rng: random.Random, index: int, plan: Plan, family: str = "valid") -> Case:
    build = _stt_valid if rng.random() < 0.5 else _tts_valid
    return build(rng, index, plan, family)


def _with(case: Case, family: str, detail: str, steps: list[Step], **kw: Any) -> Case:
    return Case(
        case.index,
        family,
        case.kind,
        detail,
        query=kw.pop("query", case.query),
        steps=tuple(steps),
        **kw,
    )


def _text_positions(case: Case) -> list[int]:
    return [i for i, s in enumerate(case.steps) if s.op == "text"]


# --- hostile families -----------------------------------------------------------------------


def _mutate(rng: random.Random, index: int, plan: Plan) -> Case:
    base = _valid(rng, index, plan, "mutate")
    steps = list(base.steps)
    at = rng.choice(_text_positions(base))
    text = str(steps[at].data)
    for _ in range(rng.randint(1, 4)):
        where = rng.randrange(max(1, len(text)))
        how = rng.choice(["delete", "insert", "replace", "cut"])
        char = rng.choice('{}[]":,\\ 0a-e.\u00e9\u4e2d\U0001f600\x00\n')
        if how == "delete":
            text = text[:where] + text[where + 1 :]
        elif how == "insert":
            text = text[:where] + char + text[where:]
        elif how == "replace":
            text = text[:where] + char + text[where + 1 :]
        else:
            text = text[:where]
    steps[at] = Step("text", text)
    return _with(base, "mutate", f"step {at}: {text[:60]!r}", steps)


_HOSTILE_VALUES: list[Any] = [
    None,
    True,
    -1,
    0,
    2**64,
    -(2**63) - 1,
    1e308,
    1.5,
    "",
    "x" * 5000,
    [],
    [1, 2],
    {},
    {"a": 1},
    "\ud800",
    "AAAA====",
    "NaN",
    "-Infinity",
]


def _nest(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _schema(rng: random.Random, index: int, plan: Plan) -> Case:
    base = _valid(rng, index, plan, "schema")
    steps = list(base.steps)
    at = rng.choice(_text_positions(base))
    message = json.loads(str(steps[at].data))
    how = rng.choice(["value", "unknown", "two_members", "deep", "empty", "top_level"])
    if how == "value":
        path = _paths(message)
        where = rng.choice(path)
        _set(message, where, rng.choice(_HOSTILE_VALUES))
        detail = f"step {at}: {'.'.join(map(str, where))} replaced"
        text = json.dumps(message, ensure_ascii=rng.random() < 0.5)
    elif how == "unknown":
        message[rng.choice(["extra", "__proto__", "contextID", "CLOSE"])] = {}
        text, detail = json.dumps(message), f"step {at}: unknown field"
    elif how == "two_members":
        message.update({"keepAlive": {}, "close": {}})
        text, detail = json.dumps(message), f"step {at}: two envelope members"
    elif how == "deep":
        depth = rng.choice([33, 200, 20_000])
        text = json.dumps({"keepAlive": _nest(depth)}) if depth < 500 else "[" * depth
        detail = f"step {at}: nested {depth} deep"
    elif how == "empty":
        text, detail = rng.choice(["{}", "null", '""', "[]", "0", " "]), f"step {at}: not a message"
    else:
        text, detail = json.dumps([message]), f"step {at}: wrapped in an array"
    steps[at] = Step("text", text)
    return _with(base, "schema", detail, steps)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            out.append((*prefix, key))
            out.extend(_paths(item, (*prefix, key)))
    return out or [prefix]


def _set(message: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    if not path:
        return
    target: Any = message
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


def _bad_utf8(rng: random.Random, index: int, plan: Plan) -> Case:
    base = _valid(rng, index, plan, "bad_utf8")
    steps = list(base.steps)
    at = rng.choice(_text_positions(base))
    raw = str(steps[at].data).encode()
    where = rng.randrange(len(raw))
    bad = rng.choice([b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82"])
    steps[at] = Step("raw_text", raw[:where] + bad + raw[where:])
    return _with(base, "bad_utf8", f"step {at}", steps, expect=EXPECTED["bad_utf8"])


def _binary(rng: random.Random, index: int, plan: Plan) -> Case:
    base = _valid(rng, index, plan, "binary")
    steps = list(base.steps)
    at = rng.randrange(len(steps) - 1) if len(steps) > 1 else 0
    if base.kind == "tts":
        steps.insert(at, Step("binary", rng.randbytes(rng.randint(0, 64))))
        return _with(base, "binary", f"binary frame at step {at}", steps)
    how = rng.choice(["odd", "empty", "nan"])
    if how == "odd":
        frame = rng.randbytes(rng.choice([1, 3, 3199]))
        return _with(
            base,
            "binary",
            f"{len(frame)} bytes",
            _insert_audio(steps, at, frame),
            expect="MISALIGNED_AUDIO",
        )
    if how == "empty":
        return _with(base, "binary", "empty frame", _insert_audio(steps, at, b""))
    # NaN / infinite float samples (docs/contract.md: INVALID_AUDIO).
    bad = rng.choice([math.nan, math.inf, -math.inf])
    frame = struct.pack("<160f", *([0.0] * 159 + [bad]))
    query = urllib.parse.urlencode(
        {"model": plan.stt_model, "encoding": "pcm_f32le", "sample_rate": plan.audio_rate_hz}
    )
    steps = [
        Step("binary", struct.pack("<1600f", *([0.0] * 1600))),
        Step("binary", frame),
        Step("text", '{"close":{}}'),
    ]
    return _with(base, "binary", f"f32 {bad}", steps, query=query, expect="INVALID_AUDIO")


def _insert_audio(steps: list[Step], at: int, frame: bytes) -> list[Step]:
    # After the config: a query config has none among the steps, a start config is step 0.
    first = 1 if steps and steps[0].op == "text" and '"start"' in str(steps[0].data) else 0
    return [*steps[: max(at, first)], Step("binary", frame), *steps[max(at, first) :]]


def _oversize(rng: random.Random, index: int, plan: Plan) -> Case:
    base = _valid(rng, index, plan, "oversize")
    steps = list(base.steps)
    # After the config (a frame before it is CONFIG_REQUIRED, which may be checked first).
    first = 1 if steps and '"start"' in str(steps[0].data) else 0
    at = rng.randrange(first, len(steps))
    size = MAX_FRAME + rng.choice([1, 2, 1000, MAX_FRAME])
    if base.kind == "stt" and rng.random() < 0.5:
        frame: Step = Step("binary", bytes(size + size % 2))
    else:
        filler = "a" * size
        frame = Step(
            "text",
            _msg("c0", "append", {"text": filler})
            if base.kind == "tts"
            else json.dumps({"finalize": {"finalizeId": filler}}),
        )
    steps.insert(at, frame)
    return _with(base, "oversize", f"{size} bytes at step {at}", steps, expect=EXPECTED["oversize"])


def _order(rng: random.Random, index: int, plan: Plan) -> Case:
    if rng.random() < 0.5:
        base = _stt_valid(rng, index, plan, "order")
        audio = Step("binary", plan.audio[:3200])
        start = Step("text", _stt_start(plan))
        close = Step("text", '{"close":{}}')
        variants = {
            "audio before start": [audio, start, close],
            "finalize before start": [Step("text", '{"finalize":{"finalizeId":"a"}}'), start],
            "two starts": [start, start, audio, close],
            "start after a query config": [start, audio, close],
            "messages after close": [start, audio, close, audio, start, Step("text", "}{"), close],
            "forced finalize id": [
                start,
                audio,
                Step("text", '{"finalize":{"finalizeId":"vx-forced-1"}}'),
            ],
            "update before start": [
                Step("text", '{"updateConfig":{"interimResults":true}}'),
                start,
            ],
            "close only": [close],
            "nothing then close frame": [Step("close", 1000)],
        }
        name = rng.choice(sorted(variants))
        query = _stt_query(plan, rng) if name == "start after a query config" else ""
        return _with(
            base,
            "order",
            name,
            variants[name],
            query=query,
            ended_by_client=name == "nothing then close frame",
        )
    base = _tts_valid(rng, index, plan, "order")
    open_ = Step("text", _msg("a", "open", {"model": plan.tts_model, "outputFormat": FORMAT}))
    append = Step("text", _msg("a", "append", {"text": "Hello. "}))
    close = Step("text", _msg("a", "close", {}))
    end = Step("text", '{"closeSession":{}}')
    variants = {
        "append before open": [append, open_, close, end],
        "double open": [open_, open_, append, close, end],
        "unknown context ops": [
            Step("text", _msg("z", k, v))
            for k, v in (
                ("cancel", {}),
                ("flush", {"flushId": "x"}),
                ("truncate", {"playedMs": 5}),
                ("close", {}),
            )
        ]
        + [end],
        "after closeSession": [open_, append, close, end, open_, append, Step("text", "{"), end],
        "two closeSessions": [end, end],
        "cancel while opening": [open_, Step("text", _msg("a", "cancel", {})), end],
        "truncate past the end": [
            open_,
            append,
            Step("text", _msg("a", "truncate", {"playedMs": 4_000_000_000})),
            end,
        ],
        "empty context id": [
            Step("text", _msg("", "open", {"model": plan.tts_model, "outputFormat": FORMAT})),
            end,
        ],
        "long context id": [Step("text", _msg("x" * 129, "append", {"text": "a"})), end],
        "open without format": [Step("text", _msg("a", "open", {"model": plan.tts_model})), end],
        "many contexts": [
            Step("text", _msg(f"m{i}", "open", {"model": plan.tts_model, "outputFormat": FORMAT}))
            for i in range(40)
        ]
        + [end],
        "start after open": [open_, Step("text", '{"start":{}}'), end],
    }
    name = rng.choice(sorted(variants))
    return _with(base, "order", name, variants[name], query="lead_ms=0")


def _query(rng: random.Random, index: int, plan: Plan) -> Case:
    if rng.random() < 0.6:
        base = _stt_valid(rng, index, plan, "query")
        params: dict[str, Any] = dict(urllib.parse.parse_qsl(_stt_query(plan, rng)))
        key = rng.choice(
            [
                "model",
                "encoding",
                "sample_rate",
                "channels",
                "silence_ms",
                "vad",
                "interim_results",
                "endpointing",
                "language",
                "request_id",
                "bogus",
            ]
        )
    else:
        base = _tts_valid(rng, index, plan, "query")
        params = {"audio": "binary", "lead_ms": "0"}
        key = rng.choice(["audio", "lead_ms", "bogus"])
    choices: list[str | bytes] = [
        "",
        "-1",
        "0",
        "abc",
        "1e309",
        "99999999999999999999",
        "16000.5",
        "nan",
        "x" * 8000,
        "\x00",
        "\u00e9",
        b"\xed\xa0\x80",
        b"\xff",
        "true",
        "2",
        "8000",
        "pcm_f32le",
        "mulaw",
        "no_such_model",
        "3",
    ]
    value = rng.choice(choices)
    params[key] = value
    query = urllib.parse.urlencode(params)
    if rng.random() < 0.2:
        query += f"&{key}={urllib.parse.quote(value)}"  # the parameter twice
    steps = [s for s in base.steps if not (s.op == "text" and '"start"' in str(s.data))]
    return _with(
        base,
        "query",
        f"{key}={value[:20]!r}",
        steps,
        query=query,
        contexts=base.contexts,
        finalizes=base.finalizes,
    )


def _auth(rng: random.Random, index: int, plan: Plan) -> Case:
    base = _valid(rng, index, plan, "auth")
    how = rng.choice(["none", "wrong", "malformed", "token"])
    return Case(
        index,
        "auth",
        base.kind,
        how,
        query=base.query,
        auth=how,
        steps=base.steps,
        protocols=("voxwire.v1", "voxwire.token.garbage") if how == "token" else (),
    )


def _resume(rng: random.Random, index: int, plan: Plan) -> Case:
    base = _valid(rng, index, plan, "resume")
    header = base64.urlsafe_b64encode(b'{"alg":"HS256"}').rstrip(b"=").decode()
    token = rng.choice(
        ["", "garbage", "a.b.c", f"{header}.e30.AAAA", "x" * 5000, "eyJ" + "A" * 100 + "." * 3]
    )
    resume: dict[str, Any] = {"resumeToken": token}
    if base.kind == "stt" and rng.random() < 0.5:
        resume["ack"] = {
            "finalizedThroughMs": rng.choice([0, 4_000_000_000]),
            "nextUtteranceIndex": rng.choice([0, 4_000_000_000]),
        }
    steps = [Step("text", json.dumps({"start": {"resume": resume}})), *base.steps]
    steps = [s for i, s in enumerate(steps) if i == 0 or '"start"' not in str(s.data)]
    return _with(base, "resume", f"token {token[:16]!r}", steps, query="")


def _disconnect(rng: random.Random, index: int, plan: Plan) -> Case:
    base = _valid(rng, index, plan, "disconnect")
    steps = list(base.steps)
    at = rng.randint(0, len(steps))
    steps.insert(at, Step("drop"))
    return _with(
        base, "disconnect", f"drop after {at} steps", steps[: at + 1], ended_by_client=True
    )


def _client_close(rng: random.Random, index: int, plan: Plan) -> Case:
    base = _valid(rng, index, plan, "client_close")
    steps = list(base.steps)
    at = rng.randint(0, len(steps))
    code = rng.choice([1000, 1001, 3000, 4000, 4999])
    return _with(
        base,
        "client_close",
        f"close {code} after {at} steps",
        [*steps[:at], Step("close", code)],
        ended_by_client=True,
    )


def _upgrade_cut(rng: random.Random, index: int, plan: Plan) -> Case:
    base = _valid(rng, index, plan, "upgrade_cut")
    request = "\r\n".join(
        [
            f"GET {base.path}?{base.query} HTTP/1.1",
            "Host: gateway",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Authorization: Bearer {key}",  # the client puts the key in
            "",
            "",
        ]
    ).encode()
    cut = len(request) if rng.random() < 0.5 else rng.randrange(len(request))
    how = rng.choice(["fin", "rst"])
    return Case(
        index,
        "upgrade_cut",
        base.kind,
        f"{how} after {cut} of {len(request)} bytes",
        query=base.query,
        body=request[:cut],
        content_type=how,  # how the raw connection ends
        ended_by_client=True,
    )


def _wav(rate: int, channels: int, bits: int, frames: bytes, declared: int | None = None) -> bytes:
    size = len(frames) if declared is None else declared
    fmt = struct.pack(
        "<HHIIHH",
        1,
        channels,
        rate,
        rate * channels * bits // 8 & 0xFFFFFFFF,
        channels * bits // 8 & 0xFFFF,
        bits,
    )
    return (
        b"RIFF"
        + struct.pack("<I", min(36 + size, 0xFFFFFFFF))
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", size)
        + frames
    )


def _http_stt(rng: random.Random, index: int, plan: Plan) -> Case:
    audio = plan.audio[: plan.audio_rate_hz * 2]
    wav = _wav(plan.audio_rate_hz, 1, 16, audio)
    query = {"model": plan.stt_model}
    how = rng.choice(
        [
            "valid",
            "random",
            "truncated",
            "bitflip",
            "huge_header",
            "mislabel",
            "raw_bad",
            "raw_odd",
            "bad_query",
            "empty",
            "zero_channels",
            "paced",
            "abandoned",
        ]
    )
    body, ctype, valid = wav, "audio/wav", False
    if how in ("paced", "abandoned"):
        return _http_stt_over_time(rng, index, plan, how, query, audio)
    if how == "valid":
        valid = True
    elif how == "random":
        body = rng.randbytes(rng.randint(1, 20_000))
        ctype = rng.choice(["audio/wav", "audio/flac", "audio/ogg", "audio/mpeg", "audio/basic"])
    elif how == "truncated":
        body = wav[: rng.randint(0, len(wav))]
    elif how == "bitflip":
        data = bytearray(wav)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(min(len(data), 64))] ^= 1 << rng.randrange(8)
        body = bytes(data)
    elif how == "huge_header":
        body = _wav(
            rng.choice([1, 16000, 2**31 - 1]),
            rng.choice([1, 2, 0, 65535]),
            rng.choice([16, 0, 7, 64]),
            audio[:3200],
            declared=0xFFFFFFF0,
        )
    elif how == "mislabel":
        ctype = rng.choice(["audio/flac", "audio/ogg", "audio/mpeg", "text/plain", "image/png"])
    elif how == "raw_bad":
        ctype = "application/octet-stream"
        query.update(
            {
                "encoding": rng.choice(["pcm_s16le", "x", ""]),
                "sample_rate": rng.choice(["16000", "-5", "abc", "7"]),
            }
        )
        body = audio
    elif how == "raw_odd":
        ctype, body = "application/octet-stream", audio[:3201]
        query.update({"encoding": "pcm_s16le", "sample_rate": "16000"})
    elif how == "bad_query":
        query[rng.choice(["model", "word_timestamps", "language"])] = rng.choice(
            ["", "x" * 3000, "maybe"]
        )
    elif how == "empty":
        body = b""
    else:
        body = _wav(plan.audio_rate_hz, 0, 16, audio[:3200])
    case = Case(
        index,
        "http_stt",
        "http_stt",
        how,
        query=urllib.parse.urlencode(query),
        body=body,
        content_type=ctype,
        valid=valid,
        expect_continue=_continue_first(rng),
    )
    if how == "mislabel" and rng.random() < 0.5:
        # Drawn after everything else, as _continue_first: a body with no audio type
        # (octet-stream, or no Content-Type) is known by its first bytes; a valid WAV so
        # sent must be transcribed.
        untyped = rng.choice(["application/octet-stream", NO_CONTENT_TYPE])
        case = replace(case, content_type=untyped, valid=True)
    return case


def _continue_first(rng: random.Random) -> bool:
    """Whether an HTTP case asks for 100 Continue: drawn last in its builder, so that the
    cases of a seed are what they were before the draw was added, and the same with it."""
    return rng.random() < 0.3


def _http_stt_over_time(
    rng: random.Random, index: int, plan: Plan, how: str, query: dict[str, str], audio: bytes
) -> Case:
    """An upload that takes its time: a valid file (WAV or compressed) in pieces with pauses,
    which must be heard; or a long one (up to two minutes of audio, under the test gateway's
    4 MiB) whose client leaves after a while, part way through the body or waiting for the
    answer, which the gateway must stop (the run's settle reading: its open sessions back)."""
    kinds = [("audio/wav", _wav(plan.audio_rate_hz, 1, 16, audio))] + list(plan.encoded)
    ctype, body = rng.choice(kinds)
    piece_bytes = rng.choice([512, 4096, 16384])
    pause_s = rng.choice([0.0, 0.005, 0.02])
    tail, repeats, leave_after_s = b"", 0, 0.0
    if how == "abandoned":
        leave_after_s = rng.choice([0.05, 0.2, 0.5, 1.0, 2.0])
        if ctype == "audio/wav" or rng.random() < 0.5:
            # A WAV of unknown length (as streaming writers leave it) grows without a header
            # to match; compressed files are sent once, slowly.
            ctype, body = "audio/wav", _wav(plan.audio_rate_hz, 1, 16, audio, 0xFFFFFFFF)
            tail, repeats, piece_bytes = audio, rng.randint(10, 55), rng.choice([0, 32768])
        else:
            piece_bytes, pause_s = 1024, 0.05
    return Case(
        index,
        "http_stt",
        "http_stt",
        f"{how} {ctype}",
        query=urllib.parse.urlencode(query),
        body=body,
        content_type=ctype,
        valid=how == "paced",
        ended_by_client=how == "abandoned",
        piece_bytes=piece_bytes,
        pause_s=pause_s,
        tail=tail,
        repeats=repeats,
        leave_after_s=leave_after_s,
        expect_continue=_continue_first(rng),
    )


def _http_tts(rng: random.Random, index: int, plan: Plan) -> Case:
    request: dict[str, Any] = {
        "text": "Hello there.",
        "config": {"model": plan.tts_model, "outputFormat": dict(FORMAT)},  # mutated below
    }
    how = rng.choice(["valid", "value", "unknown", "broken", "text_plain_bad", "long_text", "sse"])
    valid, ctype, query = how in ("valid", "sse"), "application/json", ""
    if how == "value":
        path = rng.choice(_paths(request))
        _set(request, path, rng.choice(_HOSTILE_VALUES))
    elif how == "unknown":
        request["config"]["bogus"] = 1
    if how == "broken":
        body = json.dumps(request)[: rng.randint(0, 40)].encode()
    elif how == "text_plain_bad":
        ctype = "text/plain"
        body = rng.choice([b"\xff\xfe", b"", b"hi"])
        query = urllib.parse.urlencode(
            {
                "model": plan.tts_model,
                "sample_rate": rng.choice(["abc", "-1", "16000"]),
                "encoding": rng.choice(["pcm_s16le", "nope"]),
            }
        )
    elif how == "long_text":
        request["text"] = "word " * rng.choice([10, 20_000])
        body = json.dumps(request).encode()
    else:
        body = json.dumps(request).encode()
    return Case(
        index,
        "http_tts",
        "http_tts",
        how,
        query=query,
        body=body,
        content_type=ctype,
        valid=valid,
        accept="text/event-stream" if how == "sse" else "",
        expect_continue=_continue_first(rng),
    )


_BUILDERS = {
    "valid": _valid,
    "mutate": _mutate,
    "schema": _schema,
    "bad_utf8": _bad_utf8,
    "binary": _binary,
    "oversize": _oversize,
    "order": _order,
    "query": _query,
    "auth": _auth,
    "resume": _resume,
    "disconnect": _disconnect,
    "client_close": _client_close,
    "upgrade_cut": _upgrade_cut,
    "http_stt": _http_stt,
    "http_tts": _http_tts,
}


def describe(case: Case) -> dict[str, Any]:
    """A case in a report: what was sent, short."""
    return {
        "index": case.index,
        "family": case.family,
        "kind": case.kind,
        "detail": case.detail[:120],
        "query": case.query[:120],
        "steps": [
            f"{s.op}:{(s.data if isinstance(s.data, (str, int)) else s.data[:40].hex())!s:.80}"
            for s in case.steps[:12]
        ],
    }
