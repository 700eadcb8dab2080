"""What one STT stream keeps so that it can continue on another Triton replica (issue 8).

docs/contract.md, "Failover"; the same rules as the gateway's edge failover
(docs/design/edge.md, "Sessions that survive restarts"), with the shared window
(``voxwire.replay.AudioReplayWindow``):

- The acknowledged position is the maximum of the last final result's end and the last
  answered finalize's position. All audio before it is reflected in final results already
  sent: a final result's end qualifies because utterances are sequential.
- The window holds the model's input from that position on: the PCM at the model's rate as it
  was sent to Triton, after decoding and resampling, in the pieces it was sent in. A replay
  therefore gives the new sequence exactly the input the failed one had (a replay of the
  client's own audio through a fresh resampler would not: its filter would start empty and
  its held-back tail would fall elsewhere), and a position in ms is a model sample exactly.
- Finalizes, updates and the END not yet answered are kept with the position they followed,
  and are sent again at that position; answered ones are forgotten (an accepted update is
  part of the configuration the new sequence starts with).
- Unacknowledged audio near the window forces a final (an internal finalize whose ack the
  client never sees), so the window stays bounded whatever the speaker does; a window that
  overflowed anyway (a model that never answers) cannot be replayed and the stream fails as
  without failover.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voxwire.replay import AudioReplayWindow

# PCM16 mono: the model input of every voxwire STT model (docs/contract.md, "STT models").
_FRAME_BYTES = 2


@dataclass(frozen=True, slots=True)
class ReplayPolicy:
    """How an STT stream fails over; ``window_ms`` 0 turns failover off."""

    window_ms: int = 0
    force_final_margin_ms: int = 0
    # Failovers in a row without progress (a new acknowledged position).
    max_failovers: int = 0
    # The retry delay of the BACKEND_UNAVAILABLE a stream that cannot move ends with: as with
    # no replica left, a wait helps (a replica that restarts is routed to again).
    retry_after: datetime.timedelta | None = None

    @property
    def enabled(self) -> bool:
        return self.window_ms > 0 and self.max_failovers > 0


NO_FAILOVER = ReplayPolicy()


@dataclass(frozen=True, slots=True)
class Control:
    """A model request without audio (finalize, update or END), replayed at its position."""

    control: dict[str, Any] | None
    end: bool = False


class StreamReplay:
    """The model input of one stream since its acknowledged position (ms of this stream's
    audio, not shifted by ``stream_offset_ms``)."""

    def __init__(self, rate_hz: int, policy: ReplayPolicy, *, first_utterance: int) -> None:
        self.policy = policy
        self._window = AudioReplayWindow(_FRAME_BYTES, rate_hz, max_ms=max(0, 2 * policy.window_ms))
        self.acked_ms = 0
        # The index of the next utterance (the one after the last final result sent).
        self.next_utterance = first_utterance
        self._controls: dict[str, tuple[int, Control]] = {}
        self.forced_pending = False
        self.failovers = 0  # in a row, without progress

    @property
    def position_ms(self) -> int:
        """Model audio sent so far (the position a control decided now follows)."""
        return self._window.received_ms

    @property
    def base_ms(self) -> int:
        """Where a replay starts: the acknowledged position, at a whole model sample."""
        return self._window.ms_at(self._window.frame_at(self.acked_ms))

    def audio(self, pcm16: bytes) -> None:
        """Model input sent (PCM16 at the model's rate)."""
        if self.policy.enabled and pcm16:
            self._window.append(pcm16)

    def control(self, key: str, control: Control) -> None:
        """A control sent now, answered later (``settle``)."""
        if self.policy.enabled:
            self._controls[key] = (self._window.frame_at(self._window.received_ms), control)

    def settle(self, key: str) -> None:
        """The model answered control ``key``: it is not sent again."""
        self._controls.pop(key, None)

    def advance(self, through_ms: int, next_utterance: int | None = None) -> None:
        """A final result ending at ``through_ms`` (with the next utterance's index), or an
        answered finalize at that position."""
        if next_utterance is not None and next_utterance > self.next_utterance:
            self.next_utterance = next_utterance
        through_ms = min(through_ms, self._window.received_ms)
        if through_ms > self.acked_ms:
            self.acked_ms = through_ms
            self.failovers = 0  # progress: the failover budget is per stuck position
            self._window.ack(through_ms)

    def force_final_due(self) -> bool:
        """Unacknowledged audio reached the window less its margin, and no forced final is
        under way."""
        policy = self.policy
        return (
            policy.enabled
            and not self.forced_pending
            and self._window.unacked_ms >= policy.window_ms - policy.force_final_margin_ms
        )

    def why_not(self) -> str:
        """Why the stream cannot move to another replica now ("" when it can)."""
        if not self.policy.enabled:
            return "failover is off"
        if not self._window.lossless:
            return "the unacknowledged audio outgrew the replay window"
        if self.failovers >= self.policy.max_failovers:
            return f"{self.failovers} failovers without progress"
        return ""

    def replay(self, audio: Callable[[bytes], Any], control: Callable[[Control], Any]) -> list[Any]:
        """Everything since the acknowledged position, in order, as ``audio(pcm16)`` and
        ``control(c)`` make them. Counts one failover. Raises ResumeRejected when the audio
        is no longer held (``why_not`` says so first)."""
        self.failovers += 1
        items = self._window.replay_since(self.acked_ms, self._controls.values())
        return [audio(item) if isinstance(item, bytes) else control(item) for item in items]
