"""Does a stream's audio match the format its config declares? (docs/contract.md, "Input that
does not match its declared format").

Raw audio carries no header, so a client that sends 16-bit PCM declared as mu-law, G.711 bytes
declared as PCM, big-endian or float samples as PCM_S16LE, or a whole WAV or Ogg file on a raw
stream, gets static: the model hears noise and answers with nothing or with wrong words, and
nobody is told why (the vendors' users' complaint 9, ../shared/reference/voice-apis.md). Two
checks, a pure state machine fed by the server's ingress:

- The stream's first bytes (``head``): a file's signature on a raw stream. A WAV header whose
  format is the declared one is left alone (its 44 bytes play as a click); any other (another
  format, or an Ogg, FLAC or MP3 file) is certain, and raises ``InvalidAudio`` naming both.
- The audio (``audio``: its bytes and its decoded samples at the declared rate), until 25 loud
  20 ms frames (0.5 s of speech) have been heard, or ``window_s`` of audio. Declared G.711: the
  bytes at even and odd positions jump alike from one to the next of their parity (a ratio of
  1.0 in the test set), where 16-bit PCM's random low bytes jump 7 to 100 times as far as its
  smooth high bytes. Any encoding: speech is
  smooth (adjacent samples, each frame's mean removed, correlate at a median of 0.72 and up
  over the first loud frames of the 8 kHz G.711 test set, 0.99 at 16 kHz) and does not sit at
  full scale. Misread bytes are neither: byte-swapped or float samples read as PCM correlate at
  -0.04 to 0.17, G.711 read as PCM at 0.16-0.51 with 7-18 % of its loud samples at full scale
  (none in the test set). Either is a guess, not a certainty (a client may send loud noise on
  purpose), so it is a notice, once per stream: the stream goes on.

Not detected: a wrong sample rate (upsampled phone audio declared 16 kHz is handled by the
model, docs/contract.md), mu-law and A-law confused with each other (0.64-0.68, too close to
noisy real speech), channel count.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from voxwire.audio.codecs import Encoding, PcmFormat
from voxwire.audio.wav import OtherWavFormat, WavHeaderReader
from voxwire.errors import InvalidAudio

FRAME_S = 0.02
LOUD_DBFS = -35.0  # a frame above this RMS is judged (speech, or what stands for it)
LOUD_FRAMES = 25  # 0.5 s of loud audio decides
NOISE_CORRELATION = 0.3  # speech: 0.72 and up; misread bytes: -0.04 to 0.17
NOISE_LEVEL_DBFS = -15.0  # and loud: misread bytes -4.9 to -9.5 dBFS (hiss under speech is not)
# With samples at full scale: G.711 read as PCM correlates at 0.40-0.58 on the test set (real
# calls), but 0.73-0.85 on clean studio speech made G.711 (the conformance kit's, at 8 or 16
# kHz), which 0.75 let through; speech clipped hard, the other way to reach full scale,
# correlates at 0.96 and up (the fixtures at 8, 16 and 32 times their gain, 43-77 % of the
# loud samples at full scale).
COMPANDED_CORRELATION = 0.9
FULL_SCALE = 0.9
FULL_SCALE_SHARE = 0.03  # of the loud frames' samples (G.711 read as PCM: 0.07-0.14)
# Declared G.711: how much more the bytes at one parity of the stream jump (to the next byte of
# that parity) than the other's. G.711 read as itself: 1.0 (the test set, whole files or their
# first second); 16-bit PCM read as G.711, its random low bytes against its smooth high
# bytes: 24-38, 6.9-11.5 for speech 4 times as loud and clipped, 69-101 at 1/16. A first
# version compared the two parities' byte entropies: 4.8-5.2 bits apart at the first loud
# half second, but 1.6-2.4 over whole files and nothing for loud speech.
PARITY_JUMP_RATIO = 3.0
MIN_PARITY_JUMP = 2.0  # mean jump (int8 steps) of the busier parity: below it, digital silence
HEAD_BYTES = 4096  # a WAV header with a LIST chunk ahead of its fmt still fits

# Files that have no place on a raw stream, by signature (a WAV's RIFF header is read apart:
# one of the declared format is left alone).
_WEBM = "a WebM file (Matroska: what a browser's MediaRecorder makes)"
_MP4 = "an MP4 file (M4A, AAC: what Safari's MediaRecorder makes)"
_SIGNATURES = (
    (b"OggS\x00", "an Ogg file (Opus or Vorbis)"),
    (b"fLaC", "a FLAC file"),
    (b"ID3", "an MP3 file"),
    (b"#!AMR", "an AMR file"),
    (b".snd", "a Sun AU file"),
    (b"caff", "a CAF file"),
    # EBML's magic (RFC 8794, 8): what a browser's MediaRecorder makes (Chrome and Firefox:
    # audio/webm;codecs=opus), so the likeliest file on a browser's stream.
    (b"\x1a\x45\xdf\xa3", _WEBM),
)
# Kinds the gateway's decoder (libsndfile 1.2) cannot read: an upload of one is refused for
# what it is, not for a decoder's "Format not recognised".
UNDECODABLE = frozenset({"an AMR file", _WEBM, _MP4})


def file_kind(head: bytes) -> str | None:
    """The kind of file (not WAV) that ``head``, the first bytes of a stream or upload, starts,
    by its signature ("a FLAC file"), or None."""
    for signature, what in _SIGNATURES:
        if head.startswith(signature):
            return what
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):  # IFF: FORM, size, type
        return "an AIFF file"
    if head[4:8] == b"ftyp":  # ISO/IEC 14496-12, 4.3: a box's size, then its type, first
        return _MP4
    return None


def _describe(fmt: PcmFormat) -> str:
    return f"{fmt.encoding.name} {fmt.sample_rate_hz} Hz, {fmt.channels} channel(s)"


def _hint(encoding: Encoding, companded: bool) -> str:
    if encoding in (Encoding.MULAW, Encoding.ALAW):
        return "16-bit PCM sent as G.711 sounds like this"
    if encoding is Encoding.PCM_F32LE:
        return "16-bit PCM sent as float samples sounds like this"
    if companded:
        return "G.711 (mu-law or A-law) bytes sent as PCM_S16LE sound like this"
    return "big-endian samples, 8-bit G.711 or float samples sent as PCM_S16LE sound like this"


class FormatCheck:
    """One stream's check: ``head`` with each audio message's bytes, ``samples`` with its
    decoded samples (float in [-1, 1], mono, at the declared rate) while ``listening``."""

    def __init__(self, fmt: PcmFormat, window_s: float = 15.0) -> None:
        self._fmt = fmt
        self._head = bytearray()
        self._head_done = False
        self._frame = max(1, round(fmt.sample_rate_hz * FRAME_S))
        self._left = round(window_s * fmt.sample_rate_hz)  # samples still to look at
        self._pending: npt.NDArray[np.float32] = np.zeros(0, dtype=np.float32)
        self._correlations: list[float] = []
        self._levels: list[float] = []  # loud frames' RMS (dBFS, without the mean)
        self._full_scale = 0  # loud frames' samples at full scale
        self._loud_samples = 0
        self.listening = True
        # 8-bit encodings: the summed jumps between bytes two apart, and their count, at even
        # and odd stream positions (16-bit samples declared as G.711: a random low byte and a
        # smooth high one).
        self._jumps = (
            np.zeros((2, 2), dtype=np.int64) if fmt.encoding.bytes_per_sample == 1 else None
        )
        self._position = 0

    def head(self, data: bytes) -> None:
        """The stream's first bytes, as they come. Raises InvalidAudio for a file."""
        if self._head_done:
            return
        self._head += data[: HEAD_BYTES - len(self._head)]
        if len(self._head) < 12:
            return  # wait for enough to see a signature (a client may send tiny chunks)
        head = bytes(self._head)
        if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
            if self._wav(head) or len(head) >= HEAD_BYTES:
                self._head_done = True
            return
        self._head_done = True
        what = file_kind(head)
        if what is not None:
            instead = (
                "decode it to raw samples first (in a browser, capture them with an "
                "AudioWorklet, as the gateway's voxwire.js does, not MediaRecorder)"
                if what in UNDECODABLE
                else "decode it first, or send it to POST /v1/stt, which takes files"
            )
            raise InvalidAudio(
                f"the audio is {what}, but the stream takes raw samples "
                f"({_describe(self._fmt)} as declared): {instead}"
            )

    def _wav(self, head: bytes) -> bool:
        """Whether the WAV header was judged (False: more of it is needed)."""
        reader = WavHeaderReader(max_header_bytes=HEAD_BYTES)
        try:
            reader.feed(head)
        except OtherWavFormat as exc:
            raise InvalidAudio(
                f"the audio starts with a WAV header ({exc}), but the stream takes raw samples "
                f"({_describe(self._fmt)} as declared)"
            ) from exc
        except InvalidAudio:
            return True  # not a header after all: its bytes are the stream's samples
        wav = reader.format
        if wav is None:
            return False
        declared = (self._fmt.encoding, self._fmt.sample_rate_hz, self._fmt.channels)
        if (wav.encoding, wav.rate, wav.channels) != declared:
            raise InvalidAudio(
                f"the audio starts with a WAV header of {wav.encoding.name} {wav.rate} Hz, "
                f"{wav.channels} channel(s), but the stream declared {_describe(self._fmt)}: "
                "declare the WAV's format, or send raw samples in the declared one"
            )
        return True

    def audio(
        self, data: bytes, samples: npt.NDArray[np.floating] | npt.NDArray[np.int16]
    ) -> str | None:
        """One audio message: its bytes as sent and its samples decoded (mono, at the declared
        rate; float in [-1, 1], or int16). Raises InvalidAudio for a file on the stream;
        returns the notice's text once, when the audio does not sound like its declared
        format (then, or after the window, ``listening`` turns False)."""
        self.head(data)
        if not self.listening:
            return None
        if self._jumps is not None and len(data) > 2:
            # Within the message only (a jump across messages is one of thousands).
            raw = np.frombuffer(data, dtype=np.int8).astype(np.int16)
            jumps = np.abs(raw[2:] - raw[:-2])
            start = self._position & 1
            for parity, part in ((start, jumps[0::2]), (1 - start, jumps[1::2])):
                self._jumps[parity] += (int(part.sum()), part.size)
        self._position += len(data)
        if samples.dtype == np.int16:
            return self.samples(np.multiply(samples, 1 / 32768, dtype=np.float32))
        return self.samples(samples.astype(np.float32, copy=False))

    def samples(self, x: npt.NDArray[np.floating]) -> str | None:
        """Feed decoded samples (float in [-1, 1]) alone: the checks of the samples only."""
        if not self.listening:
            return None
        x = x[: self._left]
        self._left -= len(x)
        if len(self._pending):
            x = np.concatenate((self._pending, x))
        whole = len(x) // self._frame * self._frame
        self._pending = x[whole:].astype(np.float32)  # a copy: less than a frame
        if whole:
            self._frames(x[:whole].reshape(-1, self._frame))
        verdict = self._verdict()
        if verdict is not None or len(self._correlations) >= LOUD_FRAMES or self._left <= 0:
            self.listening = False
        return verdict

    def _frames(self, frames: npt.NDArray[np.floating]) -> None:
        # Without each frame's mean: a constant is no speech (digital silence read as mu-law
        # is a constant at full scale, and correlates perfectly). float32 throughout, and
        # einsum for the row sums: the check runs on the data path (39-44 us a chunk in
        # float64, while it listens).
        varying = frames - frames.mean(axis=1, keepdims=True)
        energy = np.einsum("ij,ij->i", varying, varying)
        loud = energy > self._frame * 10 ** (LOUD_DBFS / 10)
        if not loud.any():
            return
        frames, varying, energy = frames[loud], varying[loud], energy[loud]
        self._levels.extend((10 * np.log10(np.maximum(energy / self._frame, 1e-20))).tolist())
        a, b = varying[:, :-1], varying[:, 1:]
        norm = np.sqrt(np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", b, b))
        lag = np.einsum("ij,ij->i", a, b)
        self._correlations.extend((lag / np.maximum(norm, 1e-12)).tolist())
        self._full_scale += int(np.count_nonzero(np.abs(frames) >= FULL_SCALE))
        self._loud_samples += frames.size

    def _verdict(self) -> str | None:
        if len(self._correlations) < LOUD_FRAMES:
            return None
        correlation = float(np.median(self._correlations))
        level = float(np.median(self._levels))
        share = self._full_scale / self._loud_samples
        declared = self._fmt.encoding.name
        if self._jumps is not None and self._jumps[:, 1].min() > 0:
            means = self._jumps[:, 0] / self._jumps[:, 1]
            ratio = float(means.max() / max(means.min(), 0.5))
            if means.max() >= MIN_PARITY_JUMP and ratio >= PARITY_JUMP_RATIO:
                return (
                    f"the bytes at one parity jump {ratio:.0f} times as far as at the other, "
                    f"as the low and high bytes of 16-bit samples do (G.711's: 1.0): it may "
                    f"not be {declared} as declared; {_hint(self._fmt.encoding, companded=False)}"
                )
        if correlation < NOISE_CORRELATION and level >= NOISE_LEVEL_DBFS:
            return (
                f"the audio sounds like loud noise, not speech (at {level:.0f} dBFS, adjacent "
                f"samples correlate at {correlation:.2f}; speech: 0.7 and up): it may not be "
                f"{declared} as declared; {_hint(self._fmt.encoding, companded=False)}"
            )
        if share >= FULL_SCALE_SHARE and correlation < COMPANDED_CORRELATION:
            return (
                f"{share:.0%} of the loud audio is at full scale and adjacent samples correlate "
                f"at only {correlation:.2f}: it may not be {declared} as declared; "
                f"{_hint(self._fmt.encoding, companded=True)}"
            )
        return None
