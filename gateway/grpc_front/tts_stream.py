"""``StreamingSynthesize`` through the gRPC front, with the WebSocket session's failover.

As ``stt_stream.py`` does for STT: the call is a ``TtsEdgeSession`` (the core of
``WS /v1/tts/stream``) run by the same ``TtsRunner``, so each context's text since its last
word sent waits in the same text replay, and an adapter that dies under a context reopens it
on another one from there, its timeline and sequence numbers continuing (docs/design/edge.md,
"Upstream failover inside the gateway"). Only the wire differs:

- In: each ``StreamingSynthesizeRequest`` becomes the session's message of the same name and
  context; the half-close is ``close_session`` (every context finishes, then the summary).
- Out: the session's messages become the contract's responses, audio as ``AudioChunk``
  messages (the session's JSON delivery), as fast as the model makes it (lead 0: a gRPC caller
  paces its own playback, as with the adapter). ``ContextOpened`` of a failover's new upstream
  reaches the caller as the ``StreamNotice`` FAILOVER. What only the WebSocket has (the resume
  token, going-away, ``truncated``) is not sent.
- The end: the summary (contexts, audio and timings of the whole call, the gateway's stages
  included), then OK with the timing trailers; or the session's error as the call's status.

Each context has an upstream call of its own (as on the WebSocket), so the adapter's
``max_contexts_per_stream`` does not bound a front call: the gateway's ``[tts] max_contexts``
does, with the same default (8).
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.duration_pb2 import Duration

from gateway.grpc_front.call_port import (
    CallPort,
    FrontCall,
    drain_notice,
    no_token,
    parse_request,
)
from gateway.ports import Frame
from gateway.runner import RunnerLimits
from gateway.tts.runner import TtsRunner
from gateway.tts.session import Actions, TtsEdgeSession, TtsLimits
from gateway.upstream.pool import AdapterPool
from voxwire import errors
from voxwire.edge.v1 import tts_pb2
from voxwire.v1 import synthesis_pb2

Request = synthesis_pb2.StreamingSynthesizeRequest
Response = synthesis_pb2.StreamingSynthesizeResponse
METHOD = "/voxwire.v1.Synthesis/StreamingSynthesize"

# Session messages that are the contract's responses already (the same message types).
_PASSED = frozenset({"audio", "words", "flush_ack", "cancelled", "done", "notice"})
# The session's options for a gRPC caller: audio as messages, as fast as the model goes.
_OPTIONS = tts_pb2.TtsStart(audio_delivery=tts_pb2.AUDIO_DELIVERY_JSON, lead=Duration())
_CLOSE_SESSION = tts_pb2.TtsClientMessage(close_session=tts_pb2.CloseSession())


class FrontTtsRunner(FrontCall, TtsRunner):
    """The WebSocket session's runner with the contract's messages on the client side."""

    def __init__(
        self,
        limits: TtsLimits,
        port: CallPort,
        pool: AdapterPool,
        *,
        session_id: str,
        runner_limits: RunnerLimits,
        metadata: tuple[tuple[str, str], ...],
        on_failover: Callable[[], None] | None = None,
    ) -> None:
        session = TtsEdgeSession(limits, session_id=session_id, issue_token=no_token)
        super().__init__(
            session,
            port,
            pool,
            runner_limits=runner_limits,
            metadata=metadata,
            on_failover=on_failover,
        )

    def start(self) -> Actions:
        """The session's start (its options fixed for gRPC): the run's first decisions."""
        return self.session.start(_OPTIONS)

    def _client_frame(self, frame: Frame) -> Actions:
        session = self.session
        if frame.data is None:  # the caller half-closed: every context finishes, then the end
            if session.closing:
                return Actions()
            return session.client_message(_CLOSE_SESSION)
        request = parse_request(frame.data, Request, session.limits.max_frame_bytes)
        kind = request.WhichOneof("request")
        if kind is None:
            raise errors.InvalidMessage("empty request (no field of the oneof set)")
        message = tts_pb2.TtsClientMessage(context_id=request.context_id)
        getattr(message, kind).CopyFrom(getattr(request, kind))
        return session.client_message(message)

    def _client_item(self, item: tts_pb2.TtsServerMessage | bytes) -> bytes | None:
        assert not isinstance(item, bytes)  # JSON delivery: audio comes as messages
        kind = item.WhichOneof("message")
        response = Response(context_id=item.context_id)
        if kind in _PASSED:
            getattr(response, kind).CopyFrom(getattr(item, kind))
        elif kind == "opened":
            response.opened.CopyFrom(item.opened.context)
        elif kind == "context_error":
            event = item.context_error
            response.error.error.CopyFrom(errors.from_event(event.error).to_proto())
            response.error.last_sequence_number = event.last_sequence_number
        elif kind == "summary":
            summary = item.summary
            response.summary.CopyFrom(
                synthesis_pb2.SynthesisSummary(
                    session_id=summary.session_id,
                    contexts=summary.contexts,
                    audio_ms=summary.audio_ms,
                    timings=summary.timings,
                )
            )
        elif kind == "going_away" and (notice := drain_notice(item.going_away)) is not None:
            response.notice.CopyFrom(notice)
        else:
            # session (resume token), a maximum duration's going_away, error (the status
            # carries it); truncated answers a message the contract does not have.
            return None
        return response.SerializeToString()
