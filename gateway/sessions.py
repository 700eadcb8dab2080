"""Starting edge sessions: credentials, per-key limits, resume tokens, the registry for drains.

The WebSocket handlers of both kinds go through here, so admission is the same everywhere:
authenticate at the upgrade (a refused request never reaches an adapter), take a concurrent
slot at once, and count a new session against the per-minute quota only when the first
message shows it is not a resume (so every client of a draining gateway can resume at once).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from google.protobuf.message import Message

from gateway.auth import AuthServices, Principal, SessionPermit
from gateway.auth.tokens import ResumeClaims, SessionKind
from gateway.stt import session as stt_session
from gateway.stt.session import SttEdgeSession
from gateway.tts import session as tts_session
from gateway.tts.session import TtsEdgeSession
from voxwire import errors
from voxwire.edge.v1 import stt_pb2, tts_pb2
from voxwire.v1 import transcription_pb2

# How long a resume token stays valid beyond the session's maximum duration.
RESUME_HORIZON_S = 15 * 60


class Drainable(Protocol):
    def drain(self, grace_s: float | None = None, *, reconnect_now: bool = False) -> None: ...
    def end(self, error: errors.VoxwireError) -> None: ...


@dataclass(eq=False)
class Registry:
    """The open sessions of this process and the API key of each (a drain tells each of them;
    a key's revocation ends its own)."""

    runners: dict[Drainable, str] = field(default_factory=dict)  # session -> its API key id
    draining: bool = False
    _empty: asyncio.Event = field(default_factory=asyncio.Event)

    def __len__(self) -> int:
        return len(self.runners)

    def add(self, runner: Drainable, key_id: str) -> None:
        self.runners[runner] = key_id
        self._empty.clear()

    def discard(self, runner: Drainable) -> None:
        self.runners.pop(runner, None)
        if not self.runners:
            self._empty.set()

    def end_sessions_of(self, revoked: Callable[[str], bool]) -> set[str]:
        """End (UNAUTHENTICATED) every session whose key id is ``revoked``; returns those ids."""
        ended = {key_id for key_id in self.runners.values() if revoked(key_id)}
        for runner, key_id in list(self.runners.items()):
            if key_id in ended:
                runner.end(errors.Unauthenticated(f"API key {key_id} was revoked"))
        return ended

    async def wait_empty(self) -> None:
        if self.runners:
            await self._empty.wait()


class Admission:
    """One admitted WebSocket session: its principal, its slot, and how it starts."""

    def __init__(self, auth: AuthServices, principal: Principal, permit: SessionPermit) -> None:
        self._auth = auth
        self.principal = principal
        self.permit = permit
        self.counted = False
        # The reason the session was refused at its start ("" unless it was): a refusal, not
        # a session, in the metrics and the log.
        self.refused = ""

    def count_new(self) -> None:
        """Raises RateLimited when the key is out of new sessions this minute."""
        if not self.counted:
            try:
                self._auth.limiter.count_new(self.permit, self.principal.limits)
            except errors.RateLimited as exc:
                self.refused = exc.reason
                raise
            self.counted = True

    def issuer(
        self, kind: SessionKind, ttl_s: float
    ) -> Callable[[Message, str, int], tuple[str, float]]:
        """A token issuer for a session of ``kind``, given what it resumes with (its config or
        options), its id and how many times it has resumed so far (``TokenIssuer``)."""

        def issue(config: Message, session_id: str, resumes: int) -> tuple[str, float]:
            now = time.time()
            issued = self._auth.resume_tokens.issue(
                session_id=session_id,
                key_id=self.principal.key_id,
                kind=kind,
                config=config.SerializeToString(),
                now=now,
                ttl_s=int(ttl_s + RESUME_HORIZON_S),
                resumes=resumes,
            )
            return issued.token, float(issued.expires_at)

        return issue

    def verify(self, token: str, kind: SessionKind) -> ResumeClaims:
        """The claims of a resume token. Raises ResumeRejected."""
        return self._auth.resume_tokens.verify(
            token, key_id=self.principal.key_id, kind=kind, now=time.time()
        )


def stt_start(
    admission: Admission,
) -> Callable[[SttEdgeSession, stt_pb2.SttStart], stt_session.Actions]:
    """The handler of an STT ``start`` message: a new session, or a verified resume."""

    def on_start(session: SttEdgeSession, start: stt_pb2.SttStart) -> stt_session.Actions:
        if start.HasField("resume"):
            if start.HasField("config"):
                raise errors.InvalidMessage(
                    "start.config with start.resume: a resumed session keeps its config"
                )
            claims = admission.verify(start.resume.resume_token, "stt")
            config = transcription_pb2.TranscriptionConfig.FromString(claims.config)
            return session.start(
                config,
                start.resume.ack,
                session_id=claims.session_id,
                resumes=claims.resumes + 1,
            )
        admission.count_new()
        return session.start(start.config)

    return on_start


def tts_start(
    admission: Admission, defaults: tts_pb2.TtsStart | None = None
) -> Callable[[TtsEdgeSession, tts_pb2.TtsStart], tts_session.Actions]:
    """The handler of a TTS session's start (a ``start`` message, or the first other message):
    a new session with the query string's options under the message's, or a verified resume."""

    def on_start(session: TtsEdgeSession, start: tts_pb2.TtsStart) -> tts_session.Actions:
        if start.HasField("resume"):
            claims = admission.verify(start.resume.resume_token, "tts")
            options = tts_pb2.TtsStart.FromString(claims.config)
            # Options given now (a new lead, say) win over the token's.
            _overlay(options, start)
            options.ClearField("resume")
            return session.start(options, session_id=claims.session_id, resumes=claims.resumes + 1)
        admission.count_new()
        options = tts_pb2.TtsStart()
        if defaults is not None:
            options.CopyFrom(defaults)
        _overlay(options, start)
        return session.start(options)

    return on_start


def _overlay(options: tts_pb2.TtsStart, start: tts_pb2.TtsStart) -> None:
    """Each option ``start`` sets replaces the one in ``options`` whole. MergeFrom merged a
    Duration field by field: a lead of 1.5 s under one of 3 s became 3.5 s, and a lead of 0
    (no fields set) left the one under it."""
    for descriptor, value in start.ListFields():
        if descriptor.message_type is not None:
            getattr(options, descriptor.name).CopyFrom(value)
        else:
            setattr(options, descriptor.name, value)
