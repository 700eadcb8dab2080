"""Property-based stateful tests of SynthesisSession (issue 8, "Fuzzing").

Hypothesis plays the client and the servicer around the sans-I/O core: random context messages
(valid and not, random ids, texts and configs), replica slots granted or refused, and a
synthetic model answering units with audio and word events (well-formed, or malformed). After
every step:

- ``receive`` lets only a VoxwireError out (a stream-level INVALID_MESSAGE), ``model_response``
  nothing at all (a context's failure is in-band), and every error names an ErrorReason;
- the responses satisfy the contract oracle (voxwire.fuzz.oracle.SynthesisOracle): chunks
  numbered 1, 2, ... and tiling from 0, words monotonic and non-overlapping, FlushAck naming the
  last chunk, cancelled/done/error last in their scope and nothing after, summary last;
- a FlushAck comes only after all audio of the text appended before its flush (the synthetic
  model knows which text each unit held).

Known defects are strict xfails naming issue 8.
"""

from __future__ import annotations

import datetime
from typing import Any

import numpy as np
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from inference_adapter.config import Limits
from inference_adapter.triton.catalog import ModelInfo, ModelKind
from inference_adapter.triton.tensors import ModelResponse
from inference_adapter.tts.config import resolve
from inference_adapter.tts.context import CtxState, SynthesisContext, Unit
from inference_adapter.tts.session import Actions, SynthesisSession
from voxwire import errors
from voxwire.fuzz.oracle import SynthesisOracle
from voxwire.v1 import audio_pb2, errors_pb2, stream_pb2, synthesis_pb2

MODEL = ModelInfo(
    name="tts_fuzz",
    kind=ModelKind.TTS,
    sample_rate_hz=16000,
    languages=("en-US",),
    features=frozenset({"word_timestamps", "pronunciation", "ssml"}),
    voices=("en-us",),
    benchmark=False,
    batched=False,
    sequence_slots=0,
)
LIMITS = Limits(max_contexts_per_stream=3, max_chunk_bytes=2000, max_pending_text_bytes=4000)
Req = synthesis_pb2.StreamingSynthesizeRequest
E = audio_pb2.AudioEncoding
FORMATS = [
    (E.AUDIO_ENCODING_PCM_S16LE, 16000),  # the model's own format: passthrough
    (E.AUDIO_ENCODING_PCM_S16LE, 8000),
    (E.AUDIO_ENCODING_MULAW, 8000),
    (E.AUDIO_ENCODING_PCM_F32LE, 24000),
]
IDS = ["a", "b", "c", "d"]
REASONS = {name.removeprefix("ERROR_REASON_") for name in errors_pb2.ErrorReason.keys()}
TEXT = st.lists(
    st.sampled_from(["Hello", "world.", "How", "are", "you?", "fine", "\n", "ok!", " "]),
    min_size=1,
    max_size=6,
).map(" ".join)
# Known-defect tests fail fast without shrinking (shrinking a stateful failure takes minutes);
# docs/fuzzing.md gives each one's minimal reproduction.
NO_SHRINK = settings(
    phases=[Phase.explicit, Phase.reuse, Phase.generate], report_multiple_bugs=False
)


def _nonspace(text: str) -> str:
    return "".join(text.split())


def open_msg(cid: str, fmt: tuple[int, int], words: bool = True) -> Req:
    return Req(
        context_id=cid,
        open=synthesis_pb2.SynthesisContextConfig(
            model=MODEL.name,
            word_timestamps=words,
            output_format=audio_pb2.AudioFormat(encoding=fmt[0], sample_rate_hz=fmt[1]),
        ),
    )


class SessionMachine(RuleBasedStateMachine):
    """The servicer's part: carry out the session's actions in the servicer's order."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.session = SynthesisSession(
            LIMITS,
            lambda cfg: resolve(cfg, {MODEL.name: MODEL}),
            session_id="s",
            clock=lambda: self.now,
        )
        self.oracle = SynthesisOracle()
        self.failed: errors.VoxwireError | None = None
        self.half_closed = False
        self.inflight: dict[int, tuple[SynthesisContext, Unit]] = {}  # key -> unit at the model
        self.model_frames: dict[int, int] = {}
        self.appended: dict[str, str] = {}  # context id -> text appended in its open scope
        self.answered: dict[str, str] = {}  # context id -> text of units fully answered
        # (cid, flush id) -> text appended before each such flush, oldest first (ids repeat)
        self.flush_marks: dict[tuple[str, str], list[str]] = {}
        self.summarized = False

    @property
    def live(self) -> bool:
        return self.failed is None and not self.summarized

    def send(self, msg: Req) -> None:
        self.oracle.request(msg)
        kind = msg.WhichOneof("request")
        cid = msg.context_id
        if kind == "append" and cid in self.session.contexts:
            self.appended[cid] = self.appended.get(cid, "") + msg.append.text
        if kind == "flush":
            self._mark_flush(cid, msg.flush.flush_id)
        try:
            actions = self.session.receive(msg)
        except errors.VoxwireError as exc:
            assert exc.reason in REASONS, f"{exc!r}: reason not in the ErrorReason enum"
            assert isinstance(exc, errors.InvalidMessage), f"receive raised {exc!r}"
            self.failed = exc
            return
        self.execute(actions)

    def execute(self, actions: Actions, grant: bool = True) -> None:
        """As _SynthesisStream._execute: open (slot granted or OVERLOADED), answer, retire,
        submit."""
        for ctx in actions.open:
            if grant:
                actions.to_client.insert(0, self.session.opened(ctx, "r0"))
                self.appended[ctx.context_id] = ""
                self.answered[ctx.context_id] = ""
                for key in [k for k in self.flush_marks if k[0] == ctx.context_id]:
                    del self.flush_marks[key]
            else:
                overloaded = errors.Overloaded("full", retry_delay=datetime.timedelta(seconds=1))
                actions.extend(self.session.context_failed(ctx, overloaded))
        for response in actions.to_client:
            self.check_flush_ack(response)
            self.oracle.response(response)
        for ctx in actions.finished:
            self.inflight.pop(ctx.key, None)
        for ctx, unit in actions.submit:
            assert ctx.key not in self.inflight, "two units of one context at the model at once"
            self.inflight[ctx.key] = (ctx, unit)
            self.model_frames[ctx.key] = 0

    def _mark_flush(self, cid: str, flush_id: str) -> None:
        if cid in self.session.contexts:
            marks = self.flush_marks.setdefault((cid, flush_id), [])
            marks.append(self.appended.get(cid, ""))

    def check_flush_ack(self, response: synthesis_pb2.StreamingSynthesizeResponse) -> None:
        if not response.HasField("flush_ack"):
            return
        cid = response.context_id
        marks = self.flush_marks.get((cid, response.flush_ack.flush_id)) or [""]
        before = marks.pop(0)
        spoken = _nonspace(self.answered.get(cid, ""))
        assert len(spoken) >= len(_nonspace(before)), (
            f"FlushAck for {cid!r} before the audio of all text appended before the flush"
        )

    def model_response(self, key: int, resp: ModelResponse) -> None:
        try:
            actions = self.session.model_response(key, resp)
        except Exception as exc:  # a model's failure must stay in-band, for its context only
            raise AssertionError(f"model_response let {exc!r} out") from exc
        self.execute(actions)

    def answer(self, key: int, chunks: list[int], final: bool, words: bool) -> None:
        """One response of the model for the unit in flight on ``key``."""
        ctx, unit = self.inflight[key]
        n = sum(chunks)
        events: list[dict[str, Any]] = []
        if words and n:
            start = self.model_frames[key] * 1000 // MODEL.sample_rate_hz
            end = (self.model_frames[key] + n) * 1000 // MODEL.sample_rate_hz
            events.append(
                {"type": "words", "words": [{"word": "w", "start_ms": start, "end_ms": end}]}
            )
        self.model_frames[key] += n
        if final:
            events.append({"type": "done", "samples": self.model_frames[key]})
            del self.inflight[key]
            self.answered[ctx.context_id] = self.answered.get(ctx.context_id, "") + unit.text
        audio = np.full(n, 1000, dtype=np.int16) if n else None
        self.model_response(key, ModelResponse(tuple(events), 10, audio, final))

    def finish(self) -> None:
        """Half-close and let the model answer everything: the stream must end with a summary."""
        if self.failed is not None:
            self.oracle.end(ok=False)
            return
        if not self.half_closed:
            self.half_closed = True
            self.execute(self.session.half_close())
        while self.inflight:
            key = next(iter(self.inflight))
            self.answer(key, [160], final=True, words=False)
        assert self.session.done, "every context finished, yet the session is not done"
        self.oracle.response(self.session.summary())
        self.summarized = True
        self.oracle.end(ok=True)

    @invariant()
    def contract_holds(self) -> None:
        assert self.oracle.ok, self.oracle.violations


class ProtocolMachine(SessionMachine):
    """A well-behaved client and model: every guarantee must hold and the stream must end OK."""

    @initialize(fmt=st.sampled_from(FORMATS))
    def choose_format(self, fmt: tuple[int, int]) -> None:
        self.fmt = fmt

    def _state(self, cid: str) -> CtxState | None:
        ctx = self.session.contexts.get(cid)
        return None if ctx is None else ctx.state

    @precondition(lambda self: self.live and not self.half_closed)
    @rule(cid=st.sampled_from(IDS), words=st.booleans(), grant=st.booleans())
    def open(self, cid: str, words: bool, grant: bool) -> None:
        if cid in self.session.contexts or len(self.session.contexts) >= 3:
            return
        msg = open_msg(cid, self.fmt, words)
        self.oracle.request(msg)
        self.execute(self.session.receive(msg), grant=grant)

    @precondition(lambda self: self.live and not self.half_closed)
    @rule(cid=st.sampled_from(IDS), text=TEXT)
    def append(self, cid: str, text: str) -> None:
        if self._state(cid) is CtxState.OPEN and len(self.appended.get(cid, "")) < 1500:
            self.send(Req(context_id=cid, append=synthesis_pb2.AppendText(text=text)))

    @precondition(lambda self: self.live and not self.half_closed)
    @rule(cid=st.sampled_from(IDS), flush_id=st.sampled_from(["f1", "f2", ""]))
    def flush(self, cid: str, flush_id: str) -> None:
        if self._state(cid) is CtxState.OPEN:
            self.send(Req(context_id=cid, flush=synthesis_pb2.Flush(flush_id=flush_id)))

    @precondition(lambda self: self.live and not self.half_closed)
    @rule(cid=st.sampled_from(IDS))
    def close(self, cid: str) -> None:
        if self._state(cid) is CtxState.OPEN:
            self.send(Req(context_id=cid, close=synthesis_pb2.CloseContext()))

    @precondition(lambda self: self.live and not self.half_closed)
    @rule(cid=st.sampled_from(IDS))
    def cancel(self, cid: str) -> None:
        if self._state(cid) in (CtxState.OPEN, CtxState.CLOSING):
            self.send(Req(context_id=cid, cancel=synthesis_pb2.Cancel()))

    @precondition(lambda self: self.live and not self.half_closed)
    @rule(seconds=st.floats(0, 10))
    def keep_alive(self, seconds: float) -> None:
        self.now += seconds
        self.send(Req(keep_alive=stream_pb2.KeepAlive()))

    @precondition(lambda self: self.live and not self.half_closed)
    @rule()
    def half_close(self) -> None:
        self.half_closed = True
        self.execute(self.session.half_close())

    @precondition(lambda self: self.live and self.inflight)
    @rule(
        pick=st.integers(0, 3),
        chunks=st.lists(st.integers(0, 2000), max_size=3),
        final=st.booleans(),
        words=st.booleans(),
    )
    def model_answers(self, pick: int, chunks: list[int], final: bool, words: bool) -> None:
        keys = sorted(self.inflight)
        self.answer(keys[pick % len(keys)], chunks, final, words)

    @precondition(lambda self: self.live and self.half_closed and not self.inflight)
    @rule()
    def stream_ends(self) -> None:
        self.finish()

    @precondition(lambda self: not self.live)
    @rule()
    def after_the_end(self) -> None:
        """A finished stream takes no message (the servicer stops reading at the summary)."""

    @invariant()
    def nothing_failed(self) -> None:
        assert self.failed is None, f"a well-behaved stream failed: {self.failed!r}"

    def teardown(self) -> None:
        if not self.summarized:
            self.finish()


def _open_configs() -> st.SearchStrategy[synthesis_pb2.SynthesisContextConfig]:
    pronunciation = st.builds(
        synthesis_pb2.PronunciationEntry,
        grapheme=st.text(max_size=110),
        phonemes=st.text(max_size=210),
        alphabet=st.integers(0, 5),
    )
    return st.builds(
        synthesis_pb2.SynthesisContextConfig,
        model=st.sampled_from([MODEL.name, "", "nope"]),
        voice=st.sampled_from(["", "en-us", "klingon"]),
        output_format=st.builds(
            audio_pb2.AudioFormat,
            encoding=st.integers(0, 6),
            sample_rate_hz=st.sampled_from([0, 8000, 16000, 44100, 7, 2**32 - 1]),
            channels=st.integers(0, 3),
        ),
        word_timestamps=st.booleans(),
        pronunciations=st.lists(pronunciation, max_size=3),
        text_format=st.integers(0, 3),
        language=st.sampled_from(["", "en-US", "xx"]),
    )


def hostile_requests() -> st.SearchStrategy[Req]:
    cid = st.one_of(st.sampled_from(IDS), st.text(max_size=3), st.just("x" * 129))
    text = st.one_of(
        TEXT,
        st.text(max_size=50),
        st.just("<speak><p>hi</p></speak>"),
        st.integers(1990, 2010).map(lambda n: "a" * n),
        st.just("word " * 900),
    )
    kind = st.one_of(
        st.builds(lambda c: {"open": c}, _open_configs()),
        st.builds(lambda t: {"append": synthesis_pb2.AppendText(text=t)}, text),
        st.builds(lambda f: {"flush": synthesis_pb2.Flush(flush_id=f)}, st.text(max_size=4)),
        st.just({"cancel": synthesis_pb2.Cancel()}),
        st.just({"close": synthesis_pb2.CloseContext()}),
        st.just({"keep_alive": stream_pb2.KeepAlive()}),
        st.just({}),
    )
    return st.builds(lambda c, k: Req(context_id=c, **k), cid, kind)


class HostileClientMachine(SessionMachine):
    """Random messages, ids, texts and configs in random order; a well-behaved model."""

    @precondition(lambda self: self.live)
    @rule(msg=hostile_requests(), grant=st.booleans())
    def client_sends(self, msg: Req, grant: bool) -> None:
        if self.half_closed:
            self.send(msg)  # anything after the half-close fails the stream
            if msg.WhichOneof("request") != "keep_alive":
                assert self.failed is not None, "a message after the half-close was accepted"
            return
        self.oracle.request(msg)
        if msg.WhichOneof("request") == "append" and msg.context_id in self.session.contexts:
            self.appended[msg.context_id] += msg.append.text
        if msg.WhichOneof("request") == "flush":
            self._mark_flush(msg.context_id, msg.flush.flush_id)
        try:
            actions = self.session.receive(msg)
        except errors.VoxwireError as exc:
            assert isinstance(exc, errors.InvalidMessage) and exc.reason in REASONS, repr(exc)
            self.failed = exc
            return
        self.execute(actions, grant=grant)

    @precondition(lambda self: self.live and not self.half_closed)
    @rule()
    def half_close(self) -> None:
        self.half_closed = True
        self.execute(self.session.half_close())

    @precondition(lambda self: self.live and self.inflight)
    @rule(pick=st.integers(0, 3), n=st.integers(0, 3000), final=st.booleans())
    def model_answers(self, pick: int, n: int, final: bool) -> None:
        keys = sorted(self.inflight)
        self.answer(keys[pick % len(keys)], [n], final, words=True)

    @precondition(lambda self: self.live and self.half_closed and not self.inflight)
    @rule()
    def stream_ends(self) -> None:
        self.finish()

    @precondition(lambda self: not self.live)
    @rule()
    def after_the_end(self) -> None:
        pass

    def teardown(self) -> None:
        if self.live:
            self.finish()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


def malformed_events() -> st.SearchStrategy[Any]:
    word = st.fixed_dictionaries({}, optional={k: JSON for k in ("word", "start_ms", "end_ms")})
    event = st.fixed_dictionaries(
        {"type": st.sampled_from(["words", "words", "error", "done"]) | st.text(max_size=5)},
        optional={
            "words": st.lists(word | JSON, max_size=3) | JSON,
            "reason": st.sampled_from(["SSML_INVALID", "MODEL_ERROR", "BOGUS"]) | JSON,
            "message": JSON,
            "samples": JSON,
        },
    )
    return event | JSON


class MalformedModelMachine(ProtocolMachine):
    """A well-behaved client; the model also sends malformed events, stray audio and responses
    for units it was not asked for. A context may fail (in-band, with a reason); nothing may
    escape model_response and no guarantee may break."""

    @initialize(fmt=st.sampled_from(FORMATS))
    def choose_format(self, fmt: tuple[int, int]) -> None:
        # Start with a unit in flight on a context that wants word timestamps, so the
        # malformed events are read rather than dropped as late.
        self.fmt = fmt
        msg = open_msg("a", fmt, words=True)
        self.oracle.request(msg)
        self.execute(self.session.receive(msg))
        self.send(Req(context_id="a", append=synthesis_pb2.AppendText(text="Hello there. ")))

    @precondition(lambda self: self.live)
    @rule(
        pick=st.integers(0, 12),
        events=st.lists(malformed_events(), max_size=3),
        n=st.integers(0, 500),
        final=st.booleans(),
    )
    def model_misbehaves(self, pick: int, events: list[Any], n: int, final: bool) -> None:
        # Mostly a unit in flight (where the events are read), sometimes a stray key.
        keys = sorted(self.inflight)
        key = keys[pick % len(keys)] if keys and pick < 10 else pick
        if final:
            self.inflight.pop(key, None)
        audio = np.full(n, -5, dtype=np.int16) if n else None
        self.model_response(key, ModelResponse(tuple(events), 10, audio, final))

    @invariant()
    def nothing_failed(self) -> None:
        pass

    def teardown(self) -> None:
        self.oracle.end(ok=False)


TestProtocol = ProtocolMachine.TestCase
TestHostileClient = HostileClientMachine.TestCase


class TestMalformedModel(MalformedModelMachine.TestCase):
    settings = NO_SHRINK
