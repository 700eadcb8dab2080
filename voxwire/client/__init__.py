"""voxwire.client: the asyncio SDK for the voxwire gateway (docs/design/edge.md).

    TranscriptionSession   streaming STT over WS /v1/stt/stream, with resume
    SynthesisSession       multi-context streaming TTS over WS /v1/tts/stream, with resume
    SessionOptions         timeouts and bounds; Backoff, the reconnect policy
    Resumed                the event a session reports when it continued on a new connection

A phone call from Twilio Media Streams on both sessions: ``voxwire.client.twilio.TwilioCall``.

Errors are the ``voxwire.errors`` classes (one hierarchy: ``retryable``, ``retry_delay``,
``reason``), plus ``SessionClosed`` for a call after the session ended.
"""

from __future__ import annotations

from voxwire.client.backoff import Backoff
from voxwire.client.connection import Credentials, fetch_capabilities, token_fetcher
from voxwire.client.link import SessionClosed
from voxwire.client.options import Resumed, SessionOptions
from voxwire.client.stt import TranscriptionEvent, TranscriptionSession
from voxwire.client.tts import SynthesisContext, SynthesisSession, SynthesisSessionEvent
from voxwire.client.tts_state import ContextEvent, SynthesizedAudio

__all__ = [
    "Backoff",
    "ContextEvent",
    "Credentials",
    "Resumed",
    "SessionClosed",
    "SessionOptions",
    "SynthesisContext",
    "SynthesisSession",
    "SynthesisSessionEvent",
    "SynthesizedAudio",
    "TranscriptionEvent",
    "TranscriptionSession",
    "fetch_capabilities",
    "token_fetcher",
]
