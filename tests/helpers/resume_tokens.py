"""Resume tokens for the resume property tests: what the simulated gateways issue, verified by
any of them as any gateway process verifies a real one (no signature here: the signer has its
own tests, tests/gateway/auth)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from google.protobuf.message import Message

Issuer = Callable[[Message], tuple[str, float]]


class _Session(Protocol):
    session_id: str
    resumes: int


S = TypeVar("S", bound=_Session)


class TokenBook:
    def __init__(self) -> None:
        # token -> (the session's config or options, serialized; session id; resumes so far)
        self.claims: dict[str, tuple[bytes, str, int]] = {}
        self.sessions = 0

    def new_session(self, make: Callable[[str, Issuer], S]) -> S:
        """A gateway session (``make(session_id, issue_token)``) whose tokens go in the book."""
        self.sessions += 1
        holder: list[S] = []

        def issue(config: Message) -> tuple[str, float]:
            token = f"t{len(self.claims)}"
            session = holder[0]
            self.claims[token] = (config.SerializeToString(), session.session_id, session.resumes)
            return token, 2e9

        session = make(f"s{self.sessions}", issue)
        holder.append(session)
        return session
