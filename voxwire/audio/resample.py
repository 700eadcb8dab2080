"""Streaming sample-rate conversion for one direction of one audio stream.

``StreamResampler`` converts with soxr's ``HQ`` filter (python-soxr, libsoxr) and keeps state
across chunks, so chunk boundaries do not click: over a whole stream (after ``flush``) its
output is what one-shot ``soxr.resample`` gives for the concatenated input, within float
rounding (below 1e-6; an int16 step is 3e-5). One instance per direction per stream; not
thread-safe. Two ways to stream it, by what the audio is for (measured on this machine:
``benchmarks/resample_lag.py``):

* ``"low"`` latency (the default), for live audio: into a model (its endpointer hears the end
  of speech when it comes) and a model's audio out to a listener (its first audio). Each chunk
  is converted with one-shot ``soxr.resample`` over a window that reaches back over the
  filter's span, and the output is given up to the filter's reach before the input's end: the
  rest, which the next input changes, waits for it. The lag is that reach, constant: measured
  from soxr's own impulse response per rate pair (``_reach``), 12-13 ms where 8 kHz is one of
  the rates, 2-6 ms for the others (chunks under 5 ms are gathered first). Cost: 1.3-3.6 us
  of CPU per millisecond of audio in 20 ms chunks, 0.3-0.8 us in 100 ms ones (the window is
  converted again each time). Measured through the adapter, a phone caller's final came 74 ms
  sooner on average (BENCHMARKS.md, "Resampling with low latency"), with the same words.
* ``"bulk"``, for audio no one waits on as it plays (an upload, a file): soxr's own streaming
  resampler (``soxr.ResampleStream``), the cheapest (0.2-0.3 us per millisecond of audio). It
  works on internal DFT blocks, so its output comes in bursts and lags the input by up to
  about 115 ms (mean 64 ms) at 8 kHz <-> 16 kHz, 175 ms at 8 kHz -> 48 kHz; python-soxr does
  not expose libsoxr's block sizes.

Why soxr for both (2026-12-06): the bundled speech model is tuned on soxr's output (its
narrowband cepstral prior, ``tools/calibrate_cmn.py``). libsamplerate's ``sinc_medium``, which
interpolates sample by sample with 3-6 ms of lag, was tried: its output differs from soxr's by
-80 dB or less in the voice band, yet the phone-band set through the adapter read WER 0.438
against soxr's 0.313 (0.382 after calibrating the prior again on it).

Output frame ``k`` is aligned with input time ``k / out_rate`` (soxr compensates its filter's
group delay), no leading delay to trim. After ``flush`` the total output is
``round(n_in * out_rate / in_rate)`` frames. Output may overshoot [-1, 1] slightly near full
scale (Gibbs ringing of the anti-aliasing filter); ``codecs.float32_to_int16``/``encode``
saturate it.
"""

from __future__ import annotations

import functools
import math
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
import soxr

__all__ = ["Latency", "StreamResampler"]

Float32Array = npt.NDArray[np.float32]
Latency = Literal["low", "bulk"]
_LATENCIES: Final = frozenset({"low", "bulk"})
_QUALITY: Final = "HQ"
# The filter's reach ends where its impulse response falls below this, per sample: past it
# soxr's float32 arithmetic leaves only a floor of about 1e-8 (an int16 step is 3.1e-5).
_FLOOR: Final = 1e-7
# Tiny chunks are gathered until this much output is due before a window is converted again,
# so a client sending 1-frame messages costs a conversion per 5 ms, not per frame.
_MIN_STEP_MS: Final = 5


@functools.lru_cache(maxsize=128)
def _reach(in_rate: int, out_rate: int) -> tuple[int, int]:
    """(input frames, output frames) soxr's HQ filter reaches on each side of an instant, read
    from its impulse response at a few phases (the filter is symmetric: linear phase)."""
    n = in_rate // 2  # 500 ms: well beyond any HQ filter's span
    reach_s = 0.0
    for phase in range(3):
        x = np.zeros(n, dtype=np.float32)
        at = n // 2 + phase
        x[at] = 1.0
        y = np.abs(soxr.resample(x, in_rate, out_rate, quality=_QUALITY))
        # An output frame sums the filter at the input's spacing: the response read at the
        # output's spacing is out/in times smaller (downsampling) or larger (upsampling).
        (above,) = np.nonzero(y * (in_rate / out_rate) > _FLOOR)
        centre = at * out_rate / in_rate
        reach_s = max(reach_s, (above[-1] - centre) / out_rate, (centre - above[0]) / out_rate)
    return math.ceil(reach_s * in_rate) + 1, math.ceil(reach_s * out_rate) + 1


class StreamResampler:
    """Stateful float32 resampler for one stream direction.

    ``process`` takes mono samples (1-D) or, with ``channels`` > 1, interleaved frames
    shaped ``(n, channels)``, and gives back the same shape. When ``in_rate == out_rate``
    it is a passthrough: no resampler, no latency, the input array is returned as is.

    Raises:
        ValueError: a rate or ``channels`` is not a positive int, or ``latency`` is not
            ``"low"`` or ``"bulk"``.
    """

    __slots__ = (
        "_channels",
        "_flushed",
        "_frames_in",
        "_frames_out",
        "_in_rate",
        "_latency",
        "_out_rate",
        "_reach",
        "_step",
        "_stream",
        "_window",
        "_window_start",
    )

    def __init__(
        self, in_rate: int, out_rate: int, channels: int = 1, latency: Latency = "low"
    ) -> None:
        for name, value in (("in_rate", in_rate), ("out_rate", out_rate), ("channels", channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if latency not in _LATENCIES:
            raise ValueError(f"latency must be one of {sorted(_LATENCIES)}, got {latency!r}")
        self._in_rate, self._out_rate, self._channels = in_rate, out_rate, channels
        self._latency: Latency = latency
        self._frames_in = 0
        self._frames_out = 0
        self._flushed = False
        self._stream: soxr.ResampleStream | None = None
        # "low": the input from _window_start (an absolute input frame) on, not yet past use.
        self._window: Float32Array = self._empty()
        self._window_start = 0
        # "low": the filter's reach (input frames, output frames), and the spacing of the input
        # frames whose times are whole output frames (where a window may start).
        self._reach = (0, 0)
        self._step = in_rate // math.gcd(in_rate, out_rate)
        if in_rate != out_rate:
            if latency == "bulk":
                self._stream = soxr.ResampleStream(
                    in_rate, out_rate, channels, dtype="float32", quality=_QUALITY
                )
            else:
                self._reach = _reach(in_rate, out_rate)

    @property
    def in_rate_hz(self) -> int:
        return self._in_rate

    @property
    def out_rate_hz(self) -> int:
        return self._out_rate

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def latency(self) -> Latency:
        return self._latency

    @property
    def is_passthrough(self) -> bool:
        return self._in_rate == self._out_rate

    @property
    def is_flushed(self) -> bool:
        return self._flushed

    @property
    def frames_in(self) -> int:
        """Input frames accepted so far."""
        return self._frames_in

    @property
    def frames_out(self) -> int:
        """Output frames returned so far (including by ``flush``)."""
        return self._frames_out

    @property
    def pending_out_frames(self) -> float:
        """Output frames held back (the current lag); 0 for a passthrough."""
        if self._flushed or self.is_passthrough:
            return 0.0
        if self._stream is not None:
            return float(self._stream.delay())
        return max(0.0, self._frames_in * self._out_rate / self._in_rate - self._frames_out)

    def process(self, samples: Float32Array) -> Float32Array:
        """Resample one chunk; may return fewer (even zero) frames while the filter fills.

        Returns a float32 array; for a passthrough, ``samples`` itself.

        Raises:
            TypeError: ``samples`` is not a float32 numpy array.
            ValueError: ``samples`` is not 1-D (mono) or ``(n, channels)``.
            RuntimeError: ``flush`` was already called.
        """
        if self._flushed:
            raise RuntimeError("StreamResampler.process() after flush()")
        if not isinstance(samples, np.ndarray) or samples.dtype != np.float32:
            raise TypeError(
                "samples must be a float32 numpy array, got "
                f"{getattr(samples, 'dtype', type(samples).__name__)}"
            )
        shaped = (
            samples.ndim == 1
            if self._channels == 1
            else samples.ndim == 2 and samples.shape[1] == self._channels
        )
        if not shaped:
            want = "mono (1-D)" if self._channels == 1 else f"(n, {self._channels})"
            raise ValueError(f"samples must be {want}, got shape {samples.shape}")
        self._frames_in += samples.shape[0]
        if self.is_passthrough:
            out = samples
        elif self._stream is not None:
            out = self._stream.resample_chunk(np.ascontiguousarray(samples))
        else:
            out = self._slide(samples, last=False)
        self._frames_out += out.shape[0]
        return out

    def flush(self) -> Float32Array:
        """End the stream and return the held-back tail.

        Idempotent: later calls return an empty array. ``process`` raises afterwards.
        """
        if self._flushed:
            return self._empty()
        self._flushed = True
        if self.is_passthrough:
            return self._empty()
        if self._stream is not None:
            out: Float32Array = self._stream.resample_chunk(self._empty(), last=True)
        else:
            out = self._slide(self._empty(), last=True)
            self._window = self._empty()
        self._frames_out += out.shape[0]
        return out

    def _slide(self, samples: Float32Array, last: bool) -> Float32Array:
        """The output ``samples`` (already counted in ``_frames_in``) completes: every frame the
        filter's reach past the input's end leaves unchanged by input to come; all at ``last``.
        """
        a, b = self._in_rate, self._out_rate
        if samples.shape[0]:
            self._window = np.concatenate((self._window, samples))
        reach_in, reach_out = self._reach
        window = self._window
        if last:
            upto = (2 * self._frames_in * b + a) // (2 * a)  # round(n_in * b / a)
            # The stream's last frame may round up past what one-shot soxr gives the window
            # (a rounding of 220.5 frames is 220): silence after the end, which soxr's own
            # flush adds too, gives the frames to the end.
            window = np.concatenate((window, np.zeros_like(window, shape=self._shape(reach_in))))
        else:
            upto = self._frames_in * b // a - reach_out
            # Tiny chunks are gathered: a window is converted for _MIN_STEP_MS of output or more.
            if upto - self._frames_out < b * _MIN_STEP_MS // 1000:
                return self._empty()
        if upto <= self._frames_out:
            return self._empty()
        whole = soxr.resample(window, a, b, quality=_QUALITY)
        # The window starts on an input frame whose time is a whole output frame (_start), so
        # its output frames fall on the stream's own.
        first = self._window_start * b // a
        out: Float32Array = whole[self._frames_out - first : upto - first]
        # Keep the input the next output frame's window needs: its reach back, from a start
        # on the grid.
        keep = self._start(upto * a // b - reach_in)
        if keep > self._window_start:
            self._window = self._window[keep - self._window_start :]
            self._window_start = keep
        return out

    def _start(self, frame: int) -> int:
        """The latest input frame at or before ``frame`` whose time is a whole output frame."""
        return max(0, frame) // self._step * self._step

    def _shape(self, frames: int) -> tuple[int, ...]:
        return (frames,) if self._channels == 1 else (frames, self._channels)

    def _empty(self) -> Float32Array:
        return np.zeros(self._shape(0), dtype=np.float32)

    def __repr__(self) -> str:
        return (
            f"StreamResampler({self._in_rate} -> {self._out_rate} Hz, {self._channels} ch, "
            f"{self._latency} latency, in={self._frames_in}, out={self._frames_out}, "
            f"flushed={self._flushed})"
        )
