"""Resume tokens for the resume property tests: what the simulated gateways issue, verified by
any of them as any gateway process verifies a real one (no signature here: the signer has its
own tests, tests/gateway/auth)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from google.protobuf.message import Message

Issuer = Callable[[Message, str, int], tuple[str, float]]


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

        def issue(config: Message, session_id: str, resumes: int) -> tuple[str, float]:
            token = f"t{len(self.claims)}"
            self.claims[token] = (config.SerializeToString(), session_id, resumes)
            return token, 2e9

        return make(f"s{self.sessions}", issue)
