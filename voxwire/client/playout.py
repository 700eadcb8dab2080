"""PlayoutLedger: what a carrier (Twilio Media Streams) has played of the replies sent to it,
read from its mark echoes. Sans-I/O: the caller passes the time (``time.monotonic()``).

The carrier plays one FIFO and echoes a mark when the audio sent before it has played; a
``clear`` empties the FIFO and the carrier echoes the marks that were in it too, with nothing to
tell those echoes apart (docs/design/telephony.md). So the ledger sends a mark of its own after
every chunk, reads an echo as "played up to here", and, when it sends ``clear``, marks every
pending entry discarded so that their later echoes are consumed, never read as played.

Entry states: PENDING --echo--> played (gone); PENDING --clear--> DISCARDED --echo--> gone.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

PREFIX = "vw-"


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    context_id: str
    start_ms: int  # the chunk's place in its context's timeline
    duration_ms: int

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.duration_ms


@dataclass(frozen=True, slots=True)
class Echo:
    """What one mark echo meant: ``ours`` False for a mark the ledger did not make (the
    application's own); ``played`` (context, end of its audio played) for each context that
    the echo confirmed, in order; ``discarded`` for the echo of a cleared mark."""

    ours: bool
    played: tuple[tuple[str, int], ...] = ()
    discarded: bool = False


class PlayoutLedger:
    def __init__(self) -> None:
        self._pending: deque[_Entry] = deque()
        self._names: set[str] = set()
        self._discarded: set[str] = set()
        # When the head entry began to play: the last echo, or the send into an empty FIFO.
        self._anchor = 0.0
        self._count = 0

    def sent(self, context_id: str, start_ms: int, duration_ms: int, now: float) -> str:
        """A chunk of ``context_id`` was sent; returns the name of the mark to send after it."""
        name = f"{PREFIX}{self._count}"
        self._count += 1
        if not self._pending:
            self._anchor = now  # an empty FIFO plays at once
        self._pending.append(_Entry(name, context_id, start_ms, duration_ms))
        self._names.add(name)
        return name

    def echoed(self, name: str, now: float) -> Echo:
        """The carrier echoed mark ``name``."""
        if name in self._discarded:
            self._discarded.discard(name)
            return Echo(ours=True, discarded=True)
        if name not in self._names:
            return Echo(ours=False)
        played: dict[str, int] = {}
        # The FIFO plays in order: the echo confirms every entry up to its own.
        while self._pending:
            entry = self._pending.popleft()
            self._names.discard(entry.name)
            played[entry.context_id] = entry.end_ms
            if entry.name == name:
                break
        self._anchor = now
        return Echo(ours=True, played=tuple(played.items()))

    def unplayed(self, context_id: str | None = None) -> bool:
        """Audio sent and not yet confirmed played (of ``context_id``, or of any)."""
        if context_id is None:
            return bool(self._pending)
        return any(e.context_id == context_id for e in self._pending)

    def position(self, context_id: str, now: float) -> int | None:
        """Where the playout of ``context_id`` is now, in its timeline; None when the FIFO
        holds nothing of it. The head entry has played for the time since the anchor, at most
        its duration: had it played longer, its mark would have echoed (up to the network's
        latency, which this cannot see)."""
        for index, entry in enumerate(self._pending):
            if entry.context_id != context_id:
                continue
            if index > 0:
                return entry.start_ms  # behind another context's audio, or its own head
            elapsed_ms = int((now - self._anchor) * 1000)
            return entry.start_ms + max(0, min(elapsed_ms, entry.duration_ms))
        return None

    def clear(self, now: float) -> dict[str, int]:
        """The application sends ``clear`` now: the played position of each context that had
        audio in the FIFO (its first entry's start when none of it began to play). Every
        pending mark's later echo is consumed as discarded."""
        positions: dict[str, int] = {}
        for entry in self._pending:
            if entry.context_id not in positions:
                position = self.position(entry.context_id, now)
                positions[entry.context_id] = entry.start_ms if position is None else position
            self._discarded.add(entry.name)
        self._pending.clear()
        self._names.clear()
        return positions
