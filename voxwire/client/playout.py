"""PlayoutLedger: what a carrier (Twilio Media Streams) has played of the replies sent to it,
read from its mark echoes. Sans-I/O: the caller passes the time (``time.monotonic()``).

The carrier plays one FIFO and echoes a mark when the audio sent before it has played; a
``clear`` empties the FIFO and the carrier echoes the marks that were in it too, with nothing to
tell those echoes apart (docs/design/telephony.md). So the ledger sends a mark of its own after
every chunk, reads an echo as "played up to here", and, when it sends ``clear``, marks every
pending entry discarded so that their later echoes are consumed, never read as played.

Entry states: PENDING --echo--> played (gone); PENDING --clear--> DISCARDED --echo--> gone.

The network between the application and the carrier delays both ways: an echo leaves the
carrier half a round trip before it arrives, and a ``clear`` stops playback half a round trip
after it is sent. The round trip is measured from the calls' own marks: a chunk sent into an
empty FIFO starts playing as it arrives, so its echo comes one round trip after its duration
(the least of those samples is kept: queueing only adds to it).
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
    sent_at: float
    into_empty: bool  # sent when every mark before it had echoed: it played on arrival

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
        self._anchor_echo = False  # the anchor is an echo's arrival (else a send's)
        self._count = 0
        self.rtt_s: float | None = None  # the least round trip measured, None before one

    def sent(self, context_id: str, start_ms: int, duration_ms: int, now: float) -> str:
        """A chunk of ``context_id`` was sent; returns the name of the mark to send after it."""
        name = f"{PREFIX}{self._count}"
        self._count += 1
        into_empty = not self._pending
        if into_empty:
            self._anchor, self._anchor_echo = now, False  # an empty FIFO plays on arrival
        self._pending.append(_Entry(name, context_id, start_ms, duration_ms, now, into_empty))
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
                if entry.into_empty:
                    sample = now - entry.sent_at - entry.duration_ms / 1000
                    if sample >= 0 and (self.rtt_s is None or sample < self.rtt_s):
                        self.rtt_s = sample
                break
        self._anchor, self._anchor_echo = now, True
        return Echo(ours=True, played=tuple(played.items()))

    def unplayed(self, context_id: str | None = None) -> bool:
        """Audio sent and not yet confirmed played (of ``context_id``, or of any)."""
        if context_id is None:
            return bool(self._pending)
        return any(e.context_id == context_id for e in self._pending)

    def _played(self, now: float) -> list[int]:
        """Milliseconds of each pending entry, in order, that will have played when a message
        sent now reaches the carrier (a ``clear``: what the listener heard).

        In the carrier's time, with ``half`` the one-way delay: the head began when the last
        echo left (its arrival - half) or when it arrived itself (a send into an empty FIFO +
        half); each later entry follows, or starts when it arrives if the FIFO ran dry; the
        playout is read at now + half. At most the head's duration plus the round trip past
        the anchor: had more played, an echo would be here."""
        half = (self.rtt_s or 0.0) / 2
        cursor = self._anchor - half if self._anchor_echo else self._anchor + half
        at = now + half
        budget_s = (self._pending[0].duration_ms / 1000 + 2 * half) if self._pending else 0.0
        played = []
        for entry in self._pending:
            begin = max(cursor, entry.sent_at + half)
            seconds = min(max(0.0, at - begin), entry.duration_ms / 1000, budget_s)
            budget_s -= seconds
            played.append(int(seconds * 1000 + 1e-6))
            cursor = begin + entry.duration_ms / 1000
        return played

    def positions(self, now: float) -> dict[str, int]:
        """Where the playout of each context with audio in the FIFO will be when a message
        sent now reaches the carrier (``_played``): inside its first chunk not played whole,
        or at the end of its last (played whole, its echo on its way)."""
        positions: dict[str, int] = {}
        cut: set[str] = set()
        for entry, ms in zip(self._pending, self._played(now), strict=True):
            if entry.context_id not in cut:
                positions[entry.context_id] = entry.start_ms + ms
                if ms < entry.duration_ms:
                    cut.add(entry.context_id)
        return positions

    def position(self, context_id: str, now: float) -> int | None:
        """``positions``' for one context; None when the FIFO holds nothing of it."""
        return self.positions(now).get(context_id)

    def clear(self, now: float) -> dict[str, int]:
        """The application sends ``clear`` now: the played position of each context that had
        audio in the FIFO (``positions``). Every pending mark's later echo is consumed as
        discarded."""
        positions = self.positions(now)
        self._discarded.update(self._names)
        self._pending.clear()
        self._names.clear()
        return positions
