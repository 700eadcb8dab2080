"""SynthesisSession: the sans-I/O core of one StreamingSynthesize stream (many contexts).

Rules:
- Every request names a context id (1 to 128 bytes); a missing id fails the stream
  (INVALID_MESSAGE), everything else concerning one context fails only that context, with a
  ContextError naming it: UNKNOWN_CONTEXT (flush/cancel/close of an id that is not open),
  CONTEXT_NOT_OPEN (text before open), CONTEXT_ALREADY_OPEN, TOO_MANY_CONTEXTS,
  CHUNK_TOO_LARGE, or any config error of ``open``.
- ``receive`` returns Actions: responses for the client, contexts to open (the servicer takes a
  replica slot and reports back with ``opened`` or ``open_failed``), units to submit and model
  streams to cancel. The session never does I/O.
- A half-close closes every open context; the stream ends (summary) when none is left.
- Contexts are keyed internally by a fresh integer, so a reused context id never receives a
  late response meant for its cancelled predecessor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from inference_adapter.config import Limits
from inference_adapter.triton.tensors import ModelResponse
from inference_adapter.tts.config import ResolvedSynthesisConfig
from inference_adapter.tts.context import FINISHED, CtxState, SynthesisContext, Unit
from voxwire import errors
from voxwire.late_messages import LATE_KINDS, counted, late_errors
from voxwire.ssml import looks_like_ssml
from voxwire.timings import Clock, StageClock
from voxwire.v1 import stream_pb2, synthesis_pb2

Response = synthesis_pb2.StreamingSynthesizeResponse
Resolver = Callable[[synthesis_pb2.SynthesisContextConfig], ResolvedSynthesisConfig]
MAX_CONTEXT_ID_BYTES = 128


@dataclass(slots=True)
class Actions:
    to_client: list[Response] = field(default_factory=list)
    open: list[SynthesisContext] = field(default_factory=list)
    submit: list[tuple[SynthesisContext, Unit]] = field(default_factory=list)
    finished: list[SynthesisContext] = field(default_factory=list)  # cancel model side, free slot

    def extend(self, other: Actions) -> None:
        self.to_client += other.to_client
        self.open += other.open
        self.submit += other.submit
        self.finished += other.finished


class SynthesisSession:
    def __init__(
        self, limits: Limits, resolve: Resolver, *, session_id: str, clock: Clock = time.monotonic
    ) -> None:
        self.session_id = session_id
        self._limits = limits
        self._resolve = resolve
        self._clock = clock
        self.contexts: dict[str, SynthesisContext] = {}  # open contexts by client id
        self._by_key: dict[int, SynthesisContext] = {}
        self._next_key = 0
        self.closing = False
        self.contexts_total = 0
        self._audio_ms = 0
        self.timings = StageClock(clock=clock)

    @property
    def done(self) -> bool:
        return self.closing and not self.contexts

    @property
    def busy(self) -> bool:
        """Some context has synthesis queued or in flight (the client may legitimately wait)."""
        return any(ctx.busy for ctx in self.contexts.values())

    # -- client side --------------------------------------------------------------------------

    def receive(self, msg: synthesis_pb2.StreamingSynthesizeRequest) -> Actions:
        """Handle one client message. Raises InvalidMessage only for stream-level faults."""
        t0 = self._clock()
        kind = msg.WhichOneof("request")
        actions = Actions()
        if kind is None:
            raise errors.InvalidMessage(
                "empty StreamingSynthesizeRequest (no field of the oneof set)"
            )
        if kind != "keep_alive":
            cid = msg.context_id
            if not cid or len(cid.encode()) > MAX_CONTEXT_ID_BYTES:
                raise errors.InvalidMessage(f"context_id must be 1..{MAX_CONTEXT_ID_BYTES} bytes")
            if self.closing:
                raise errors.InvalidMessage("no message may follow the stream's half-close")
            try:
                self._dispatch(kind, msg, actions)
            except errors.VoxwireError as exc:
                self._fail_context(cid, exc, actions)
        self.timings.add("receive", self._clock() - t0)
        return actions

    def _dispatch(
        self, kind: str, msg: synthesis_pb2.StreamingSynthesizeRequest, actions: Actions
    ) -> None:
        cid = msg.context_id
        ctx = self.contexts.get(cid)
        if kind == "open":
            if ctx is not None:
                raise errors.ContextAlreadyOpen(f"context {cid!r} is already open")
            if len(self.contexts) >= self._limits.max_contexts_per_stream:
                raise errors.TooManyContexts(
                    f"a stream may hold {self._limits.max_contexts_per_stream} open contexts; "
                    "close or cancel one first"
                )
            self._open(cid, self._resolve(msg.open), actions)
            return
        if ctx is None:
            if kind == "append":
                raise errors.ContextNotOpen(f"text for context {cid!r} before it was opened")
            raise errors.UnknownContext(f"no open context {cid!r} on this stream")
        if not ctx.accepts(kind):
            if ctx.state is CtxState.CLOSING and kind in LATE_KINDS:
                # After its close: the context still speaks all its text and ends with done,
                # and the message is answered after that, as for a context no longer open.
                # Failing the context here dropped all its audio, or not, by timing.
                ctx.late = counted(ctx.late, kind)
                return
            raise errors.InvalidMessage(
                f"{kind} is not accepted while context {cid!r} is {ctx.state.value}"
            )
        if kind == "append":
            size = len(msg.append.text.encode())
            if size > self._limits.max_chunk_bytes:
                raise errors.ChunkTooLarge(
                    f"text of {size} bytes exceeds max_chunk_bytes {self._limits.max_chunk_bytes}"
                )
            ctx.append(msg.append.text, self._clock())
            if not ctx.config.ssml and not ctx.text_seen and msg.append.text.strip():
                ctx.text_seen = True
                if looks_like_ssml(msg.append.text):
                    actions.to_client.append(_ssml_as_plain(cid))
        elif kind == "flush":
            actions.to_client += ctx.flush(msg.flush.flush_id)
        elif kind == "close":
            actions.to_client += ctx.close()
        elif kind == "cancel":
            actions.to_client.append(ctx.cancel())
        self._advance(ctx, actions)

    def _open(self, cid: str, config: ResolvedSynthesisConfig, actions: Actions) -> None:
        self._next_key += 1
        ctx = SynthesisContext(
            self._next_key,
            cid,
            config,
            self._limits,
            session_id=self.session_id,
            clock=self._clock,
        )
        self.contexts[cid] = ctx
        self._by_key[ctx.key] = ctx
        self.contexts_total += 1
        actions.open.append(ctx)

    def opened(self, ctx: SynthesisContext, replica: str) -> Response:
        """The servicer holds a replica slot for ``ctx``."""
        ctx.timings.replica = replica
        return Response(
            context_id=ctx.context_id,
            opened=synthesis_pb2.ContextOpened(
                model=ctx.config.model.name,
                voice=ctx.config.voice,
                model_sample_rate_hz=ctx.config.model.sample_rate_hz,
            ),
        )

    def context_failed(self, ctx: SynthesisContext, error: errors.VoxwireError) -> Actions:
        """The servicer could not open, or lost, the model side of ``ctx``."""
        actions = Actions()
        if self._by_key.get(ctx.key) is ctx and ctx.state not in FINISHED:
            actions.to_client.append(ctx.fail(error))
            self._retire(ctx, actions)
        return actions

    def failed_over(self, ctx: SynthesisContext, replica: str) -> Actions:
        """The servicer moved the model side of ``ctx`` to ``replica`` (its replica failed):
        a notice for the client, and the unit in flight again (``SynthesisContext.resubmit``)."""
        actions = Actions()
        if self._by_key.get(ctx.key) is not ctx or ctx.state in FINISHED:
            return actions
        ctx.timings.replica = replica
        actions.to_client.append(
            Response(
                context_id=ctx.context_id,
                notice=stream_pb2.StreamNotice(
                    kind=stream_pb2.StreamNotice.KIND_FAILOVER,
                    message="the model server failed; the context moved to another one and "
                    f"goes on after sequence number {ctx.last_sequence}",
                    replica=replica,
                ),
            )
        )
        unit = ctx.resubmit()
        if unit is not None:
            actions.submit.append((ctx, unit))
        return actions

    def half_close(self) -> Actions:
        """Close every open context; the stream ends when they are all finished."""
        self.closing = True
        actions = Actions()
        for ctx in list(self.contexts.values()):
            if ctx.state is CtxState.OPEN:
                actions.to_client += ctx.close()
            self._advance(ctx, actions)
        return actions

    def _fail_context(self, cid: str, error: errors.VoxwireError, actions: Actions) -> None:
        ctx = self.contexts.get(cid)
        if ctx is not None and ctx.state not in FINISHED:
            actions.to_client.append(ctx.fail(error))
            self._retire(ctx, actions)
        else:
            # No such context (unknown id, rejected open): the error still names the id.
            actions.to_client.append(
                Response(context_id=cid, error=synthesis_pb2.ContextError(error=error.to_proto()))
            )

    # -- model side ---------------------------------------------------------------------------

    def model_response(self, key: int, resp: ModelResponse) -> Actions:
        actions = Actions()
        ctx = self._by_key.get(key)
        if ctx is None:
            return actions  # a context that already ended
        try:
            actions.to_client += ctx.model_response(resp)
        except errors.VoxwireError as exc:
            actions.to_client.append(ctx.fail(exc))
        self._advance(ctx, actions)
        return actions

    def _advance(self, ctx: SynthesisContext, actions: Actions) -> None:
        unit = ctx.next_unit()
        if unit is not None:
            actions.submit.append((ctx, unit))
        if ctx.state in FINISHED:
            self._retire(ctx, actions)

    def _retire(self, ctx: SynthesisContext, actions: Actions) -> None:
        if ctx.late:  # after the context's last message (done, cancelled, its error)
            actions.to_client += [
                Response(context_id=ctx.context_id, error=synthesis_pb2.ContextError(error=e))
                for e in (error.to_proto() for error in late_errors(ctx.context_id, ctx.late))
            ]
            ctx.late = None
        if self.contexts.get(ctx.context_id) is ctx:
            del self.contexts[ctx.context_id]
        if self._by_key.pop(ctx.key, None) is not None:
            self._audio_ms += ctx.audio_ms
            for stage, us in ctx.timings.stages_us.items():
                self.timings.add_us(stage, us)
            self.timings.model_requests += ctx.timings.model_requests
            self.timings.model_responses += ctx.timings.model_responses
            if ctx.timings.first_response_us is not None and self.timings.first_response_us is None:
                self.timings.first_response_us = ctx.timings.first_response_us
            actions.finished.append(ctx)

    def summary(self) -> Response:
        return Response(
            summary=synthesis_pb2.SynthesisSummary(
                session_id=self.session_id,
                contexts=self.contexts_total,
                audio_ms=self._audio_ms,
                timings=self.timings.to_proto(),
            )
        )

    def charge_send(self, seconds: float) -> None:
        self.timings.add("send", seconds)


def _ssml_as_plain(context_id: str) -> Response:
    """A context declared plain whose text opens an SSML document: its markup is spoken as
    words (docs/contract.md, "Input that does not match its declared format")."""
    return Response(
        context_id=context_id,
        notice=stream_pb2.StreamNotice(
            kind=stream_pb2.StreamNotice.KIND_FORMAT_SUSPECT,
            message="the text opens an SSML document (<speak>), but the context's text_format "
            "is PLAIN: its markup is spoken as words; open the context with "
            "text_format SSML to have it read as SSML",
        ),
    )
