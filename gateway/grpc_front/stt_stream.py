"""``StreamingTranscribe`` through the gRPC front, with the WebSocket session's failover.

The front reads this call (only unary ones are relayed as bytes, ``relay.py``): it is an
``SttEdgeSession`` (the same sans-I/O core as ``WS /v1/stt/stream``) run by the same
``SttRunner``, so the audio since the last final waits in the same replay window, and an
adapter that dies under the call is replaced by another without the caller seeing an error
(docs/design/edge.md, "Upstream failover inside the gateway"). Only the wire differs:

- In: each ``StreamingTranscribeRequest`` becomes the session's message of the same name
  (``config`` its start; ``stream_offset_ms`` / ``first_utterance_index``, a caller continuing
  an earlier call, its acknowledged position); the half-close is ``close``.
- Out: the session's messages become the contract's responses. What only the WebSocket has
  (the session's resume token, going-away, the bare ack) is not sent: a gRPC caller continues
  with the contract's own offsets. An adapter's failover reaches the caller as the
  ``StreamNotice`` FAILOVER in place of a second ``started``.
- The end: the summary (audio and utterances of the whole call, timings of every upstream
  stream plus the gateway's stages), then OK with the timing trailers; or the session's error as
  the call's status, with its rich details.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.grpc_front.call_port import (
    CallPort,
    FrontCall,
    drain_notice,
    no_token,
    parse_request,
)
from gateway.ports import Frame
from gateway.runner import RunnerLimits
from gateway.stt.runner import SttRunner
from gateway.stt.session import Actions, State, SttEdgeSession, SttLimits
from gateway.upstream.pool import AdapterPool
from voxwire import errors
from voxwire.edge.v1 import stt_pb2
from voxwire.v1 import transcription_pb2

Request = transcription_pb2.StreamingTranscribeRequest
Response = transcription_pb2.StreamingTranscribeResponse
METHOD = "/voxwire.v1.Transcription/StreamingTranscribe"

# Contract messages that pass to the caller as they are (the same message types on both wires).
_PASSED = frozenset(
    ("started", "result", "speech_started", "utterance_end", "finalize_ack")
    + ("update_config_ack", "notice")
)


class FrontSttSession(SttEdgeSession):
    """The edge session, its errors worded for a contract caller."""

    _start_again = "config may only be the first message of a stream"
    _start_first = "the first message of a stream must be its config"


class FrontSttRunner(FrontCall, SttRunner):
    """The WebSocket session's runner with the contract's messages on the client side."""

    def __init__(
        self,
        limits: SttLimits,
        port: CallPort,
        pool: AdapterPool,
        *,
        session_id: str,
        runner_limits: RunnerLimits,
        metadata: tuple[tuple[str, str], ...],
        on_failover: Callable[[], None] | None = None,
    ) -> None:
        session = FrontSttSession(limits, session_id=session_id, issue_token=no_token)
        super().__init__(
            session,
            port,
            pool,
            runner_limits=runner_limits,
            metadata=metadata,
            on_failover=on_failover,
        )
        self._stream_id = ""  # the session id of the first upstream's ``started``
        self._first_index = 0  # the caller's first_utterance_index

    def start(self) -> None:
        """Nothing to decide before the caller's config (``FrontTtsRunner.start`` has)."""
        return None

    def _client_frame(self, frame: Frame) -> Actions:
        session = self.session
        if frame.data is None:  # the caller half-closed: a graceful end
            if session.state is State.AWAITING_START:
                raise errors.ConfigRequired("the call half-closed before its config")
            try:
                session.check("close")
            except errors.InvalidMessage:
                return Actions()  # closing already (an explicit close, or a hand-over)
            return session.client_message(stt_pb2.SttClientMessage(close=_CLOSE))
        if session.input_ended:
            return session.discard()  # after close: unread (docs/contract.md)
        request = parse_request(frame.data, Request, session.limits.max_frame_bytes)
        kind = request.WhichOneof("request")
        if kind == "audio":
            return session.client_audio(request.audio)
        if kind == "config":
            session.check("start")
            config = request.config
            # A caller continuing an earlier call: its position, as a resumed session's ack.
            ack = None
            if config.stream_offset_ms or config.first_utterance_index:
                ack = stt_pb2.Ack(
                    finalized_through_ms=config.stream_offset_ms,
                    next_utterance_index=config.first_utterance_index,
                )
                self._first_index = config.first_utterance_index
            return session.start(config, ack, from_config=True)
        if kind is None:
            raise errors.InvalidMessage("empty request (no field of the oneof set)")
        message = stt_pb2.SttClientMessage()
        getattr(message, kind).CopyFrom(getattr(request, kind))
        return session.client_message(message)

    def _client_item(self, message: stt_pb2.SttServerMessage) -> bytes | None:
        kind = message.WhichOneof("message")
        if kind == "started":
            self._stream_id = message.started.session_id
        if kind in _PASSED:
            response = Response()
            getattr(response, kind).CopyFrom(getattr(message, kind))
            return response.SerializeToString()
        if kind == "summary":
            return Response(summary=self._summary(message.summary)).SerializeToString()
        if kind == "going_away" and (notice := drain_notice(message.going_away)) is not None:
            return Response(notice=notice).SerializeToString()
        # session (resume token), a maximum duration's going_away, error (the status carries
        # it), the bare ack.
        return None

    def _summary(self, edge: Any) -> transcription_pb2.TranscriptionSummary:
        session = self.session
        return transcription_pb2.TranscriptionSummary(
            # The id the caller got in ``started`` (a failover's upstream has another).
            session_id=self._stream_id or session.session_id,
            audio_ms=edge.audio_ms,
            utterances=max(0, edge.utterances - self._first_index),
            timings=edge.timings,
        )


_CLOSE = transcription_pb2.CloseStream()
