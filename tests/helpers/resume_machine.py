"""What the STT and TTS resume property tests share (tests/client/test_*_resume_props.py): the
SDK's connection life as ``voxwire/client/link.py`` runs it (a connection's first message,
writes only while live, the end of a connection read by the state), the network's faults, and
calm stretches in which messages move. Each test adds its state machine, its gateway session
and upstream toy, and its invariants."""

from __future__ import annotations

from collections import deque
from typing import Any

from google.protobuf.message import Message
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from tests.helpers.clock import Clock
from tests.helpers.resume_tokens import TokenBook
from voxwire.client.stt_state import Phase
from voxwire.edge.messages import encode


class Link:
    """One WebSocket and the gateway session behind it."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.to_gateway: deque[bytes | str] = deque()  # binary audio, or JSON text
        self.to_client: deque[str | bytes | int] = deque()  # JSON, a binary frame, a close
        self.gateway_closed = False  # the gateway closed: it reads nothing more


class ResumeMachine(RuleBasedStateMachine):
    state: Any  # the SDK's state machine (SttClientState, SynthesisClientState)
    conn: Any  # the live Link (a subclass of it), or None

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.conn = None
        self.live = False  # the SDK's ``live``: a session message came and its replay is out
        self.tokens = TokenBook()
        self.failure: BaseException | None = None

    def new_link(self) -> Link:
        """A connection to a new gateway session (a new gateway process, as far as it knows)."""
        raise NotImplementedError

    def gateway_reads(self) -> bool:
        """The gateway reads one frame of the connection; False when it reads nothing."""
        raise NotImplementedError

    def client_reads(self) -> bool:
        """The SDK reads one message of the connection; False when there is none."""
        raise NotImplementedError

    def step(self) -> bool:
        """One step of progress with no fault; False when nothing moves without time."""
        raise NotImplementedError

    def breaking(self) -> None:
        """Before a connection breaks (coverage events)."""

    # -- the SDK's link ----------------------------------------------------------------------

    @property
    def over(self) -> bool:
        return self.state.phase in (Phase.ENDED, Phase.FAILED)

    def write(self, item: bytes | Message | None) -> None:
        """The SDK's ``write``: on the live connection, else nothing (the replay sends it)."""
        if item is not None and self.live and self.conn is not None:
            self.conn.to_gateway.append(item if isinstance(item, bytes) else encode(item))

    def lost(self, code: int | None) -> None:
        self.conn = None
        self.live = False
        outcome = self.state.connection_lost(code)
        if outcome.failure is not None:
            self.failure = outcome.failure

    def settle(self, *, steps: int = 5000) -> None:
        for _ in range(steps):
            if not self.step():
                return

    # -- rules: the network --------------------------------------------------------------------

    @precondition(lambda self: self.state.phase is Phase.CONNECTING and self.conn is None)
    @rule()
    def connect(self) -> None:
        self.conn = self.new_link()
        self.conn.to_gateway.append(encode(self.state.connected()))

    @rule(n=st.integers(1, 4))
    def deliver_to_gateway(self, n: int) -> None:
        for _ in range(n):
            self.gateway_reads()

    @rule(n=st.integers(1, 6))
    def deliver_to_client(self, n: int) -> None:
        for _ in range(n):
            self.client_reads()

    @rule(steps=st.integers(1, 40))
    def progress(self, steps: int) -> None:
        """A stretch of calm: messages carried, requests answered."""
        for _ in range(steps):
            if not self.step():
                break

    @precondition(lambda self: self.conn is not None)
    @rule(code=st.sampled_from([None, 1006, "no", "no", "no"]))
    def network_breaks(self, code: int | str | None) -> None:
        """Everything in flight either way is lost (a gateway killed, a network gone)."""
        if code == "no":
            return
        event("the connection broke")
        self.breaking()
        self.lost(code if isinstance(code, int) else None)
