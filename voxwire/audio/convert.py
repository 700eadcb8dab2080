"""Audio of one wire format as another, chunk by chunk: what a client sends a model that does
not take its audio as it is (a server that does not resample: 16 kHz PCM16 mono only).

Shared by the gateway (raw uploads to ``POST /v1/stt``, the sockets, ``POST /v1/tts``) and the
CLI (``voxwire transcribe``, ``voxwire speak``): each chunk is decoded to float (G.711 through
its tables), mixed down when fewer channels are asked (the mean), resampled with one
``StreamResampler`` (one filter state across chunks, so their boundaries do not click;
``voxwire.audio.resample``: low latency, 4-13 ms, for live audio; ``"bulk"``, cheaper but up to
~175 ms, for uploads and files) and encoded. A chunk of 100 ms costs well under a millisecond:
cheap enough for the event loop.
"""

from __future__ import annotations

import numpy as np

from voxwire.audio.codecs import PcmFormat, decode, encode
from voxwire.audio.resample import Latency, StreamResampler

__all__ = ["FormatConverter"]


class FormatConverter:
    """``source`` audio as ``target``: ``convert`` each chunk (whole frames), then ``flush``
    the resampler's tail once.

    Raises:
        ValueError: ``target`` has more channels than ``source``.
    """

    __slots__ = ("_mix", "_resampler", "_samples", "_source", "_target")

    def __init__(self, source: PcmFormat, target: PcmFormat, latency: Latency = "low") -> None:
        if target.channels > source.channels:
            raise ValueError(f"{source.channels} channel(s) cannot become {target.channels}")
        self._source, self._target = source, target
        # Decoded as one channel, every sample is decoded alone: interleaved frames stay.
        self._samples = PcmFormat(source.encoding, source.sample_rate_hz, 1)
        self._mix = target.channels < source.channels
        self._resampler = StreamResampler(
            source.sample_rate_hz, target.sample_rate_hz, target.channels, latency
        )

    def convert(self, data: bytes | bytearray | memoryview) -> bytes:
        """``data`` (whole frames of the source) in the target format; may be b"" while the
        resampler holds it back.

        Raises:
            AudioDecodeError: ``data`` is not whole frames; InvalidSamples: float audio holds
                NaN or infinity.
        """
        frames = decode(data, self._samples).reshape(-1, self._source.channels)
        if self._mix:
            frames = frames.mean(axis=1, dtype=np.float32, keepdims=True)
        if self._target.channels == 1:
            frames = frames.reshape(-1)
        frames = self._resampler.process(frames)
        return encode(frames.reshape(-1), self._target.encoding) if frames.size else b""

    def flush(self) -> bytes:
        """What the resampler still holds (b"" when it does not resample). Once only."""
        tail = self._resampler.flush()
        return encode(tail.reshape(-1), self._target.encoding) if tail.size else b""
