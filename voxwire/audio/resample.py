"""Streaming sample-rate conversion for one direction of one audio stream.

``StreamResampler`` keeps the filter state across chunks, so chunk boundaries do not click,
and its output over a whole stream (after ``flush``) is what a one-shot conversion of the
concatenated input gives. One instance per direction per stream; not thread-safe. Two engines,
each where it is better (measured on this machine: ``benchmarks/resample_lag.py``):

* ``"soxr"`` (the default): soxr's ``HQ`` streaming resampler (python-soxr, libsoxr), the
  cheapest (0.2-0.3 us of CPU per millisecond of audio), but it works on internal DFT blocks,
  so output comes in bursts and lags the input: up to about 115 ms (mean 64 ms) at
  8 kHz <-> 16 kHz, 175 ms at 8 kHz -> 48 kHz; python-soxr does not expose libsoxr's block
  sizes. For audio into a speech model (the bundled one is tuned on it, below), uploads and
  files.
* ``"libsamplerate"``: libsamplerate's ``sinc_medium`` converter (python-samplerate;
  documented as 121 dB SNR over 90 % of the band, about soxr "HQ"'s 20 bits over 91 %). It
  interpolates sample by sample, so it holds back only its filter's half length: a constant
  2.9-5.9 ms of output whatever the chunking. For a model's audio out to a listener, whose
  first audio waits that long and no longer. It costs 2-6 us of CPU per millisecond of audio,
  10-20 times soxr's.

Why audio in stays on soxr although its lag reaches the model's endpointer (measured
2026-12-06, ``stt_pocketsphinx``'s own session code, the phone-band speech set at 8 kHz with
2 s of silence after: the final came 60 ms later on average, 20-100 ms, than with
libsamplerate): the model's accuracy is tuned on soxr's output. Its narrowband cepstral prior is
calibrated on it (``tools/calibrate_cmn.py``); with libsamplerate and that prior the mu-law set
read WER 0.438 through the adapter (soxr: 0.313), and with the prior calibrated again on
libsamplerate's output 0.382 in Twilio's paced 20 ms frames, 0.324 mu-law and 0.235 A-law
unpaced (soxr: 0.338 and 0.191), though the two outputs differ by -80 dB or less in the voice
band. A model tuned on another resampler could say so in its capabilities; none does yet.

Both compensate their filter's group delay: output frame ``k`` is aligned with input time
``k / out_rate``, no leading delay to trim. After ``flush`` the total output is
``round(n_in * out_rate / in_rate)`` frames. Output may overshoot [-1, 1] slightly near full
scale (Gibbs ringing of the anti-aliasing filter); ``codecs.float32_to_int16``/``encode``
saturate it.
"""

from __future__ import annotations

from typing import Final, Literal

import numpy as np
import numpy.typing as npt
import samplerate
import soxr

__all__ = ["Engine", "StreamResampler"]

Float32Array = npt.NDArray[np.float32]
Engine = Literal["soxr", "libsamplerate"]
_ENGINES: Final = frozenset({"soxr", "libsamplerate"})
_SRC_CONVERTER: Final = "sinc_medium"
# python-samplerate sizes each call's output by its input, so an empty end-of-input call
# gives nothing back: the tail is pushed out with silence (what libsamplerate pads with
# itself at the end of input), this much at a time, and the excess is cut.
_PUSH_MS: Final = 10
# The held-back tail is at most about 6 ms: a few pushes always do; more is a bug.
_MAX_PUSHES: Final = 16


class StreamResampler:
    """Stateful float32 resampler for one stream direction.

    ``process`` takes mono samples (1-D) or, with ``channels`` > 1, interleaved frames
    shaped ``(n, channels)``, and gives back the same shape. When ``in_rate == out_rate``
    it is a passthrough: no resampler, no latency, the input array is returned as is.

    Raises:
        ValueError: a rate or ``channels`` is not a positive int, or ``engine`` is not
            ``"soxr"`` or ``"libsamplerate"``.
    """

    __slots__ = (
        "_channels",
        "_flushed",
        "_frames_in",
        "_frames_out",
        "_in_rate",
        "_engine",
        "_out_rate",
        "_ratio",
        "_soxr",
        "_src",
    )

    def __init__(
        self, in_rate: int, out_rate: int, channels: int = 1, engine: Engine = "soxr"
    ) -> None:
        for name, value in (("in_rate", in_rate), ("out_rate", out_rate), ("channels", channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if engine not in _ENGINES:
            raise ValueError(f"engine must be one of {sorted(_ENGINES)}, got {engine!r}")
        self._in_rate, self._out_rate, self._channels = in_rate, out_rate, channels
        self._engine: Engine = engine
        self._ratio = out_rate / in_rate
        self._frames_in = 0
        self._frames_out = 0
        self._flushed = False
        self._src: samplerate.Resampler | None = None
        self._soxr: soxr.ResampleStream | None = None
        if in_rate != out_rate:
            if engine == "libsamplerate":
                self._src = samplerate.Resampler(_SRC_CONVERTER, channels=channels)
            else:
                self._soxr = soxr.ResampleStream(
                    in_rate, out_rate, channels, dtype="float32", quality="HQ"
                )

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
    def engine(self) -> Engine:
        return self._engine

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
        if self._soxr is not None:
            return float(self._soxr.delay())
        return max(0.0, self._frames_in * self._ratio - self._frames_out)

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
        if self._src is not None:
            out: Float32Array = self._src.process(
                np.ascontiguousarray(samples), self._ratio, end_of_input=False
            )
        elif self._soxr is not None:
            out = self._soxr.resample_chunk(np.ascontiguousarray(samples))
        else:
            out = samples
        self._frames_out += out.shape[0]
        return out

    def flush(self) -> Float32Array:
        """End the stream and return the held-back tail.

        Idempotent: later calls return an empty array. ``process`` raises afterwards.
        """
        if self._flushed:
            return self._empty()
        self._flushed = True
        if self._soxr is not None:
            out: Float32Array = self._soxr.resample_chunk(self._empty(), last=True)
        elif self._src is not None:
            out = self._push_tail()
        else:
            return self._empty()
        self._frames_out += out.shape[0]
        return out

    def _push_tail(self) -> Float32Array:
        assert self._src is not None
        # round(n_in * out / in), in integers: what a one-shot conversion gives.
        total = (2 * self._frames_in * self._out_rate + self._in_rate) // (2 * self._in_rate)
        want = total - self._frames_out
        if want <= 0:
            return self._empty()
        silence = np.zeros(self._shape(self._in_rate * _PUSH_MS // 1000 + 1), dtype=np.float32)
        parts: list[Float32Array] = []
        got = 0
        for _ in range(_MAX_PUSHES):
            part: Float32Array = self._src.process(silence, self._ratio, end_of_input=False)
            parts.append(part)
            got += part.shape[0]
            if got >= want:
                break
        return np.concatenate(parts)[:want]

    def _shape(self, frames: int) -> tuple[int, ...]:
        return (frames,) if self._channels == 1 else (frames, self._channels)

    def _empty(self) -> Float32Array:
        return np.zeros(self._shape(0), dtype=np.float32)

    def __repr__(self) -> str:
        return (
            f"StreamResampler({self._in_rate} -> {self._out_rate} Hz, {self._channels} ch, "
            f"{self._engine}, in={self._frames_in}, out={self._frames_out}, "
            f"flushed={self._flushed})"
        )
