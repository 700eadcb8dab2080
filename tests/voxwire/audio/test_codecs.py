"""Codec tests: G.711 against reference vectors, error bounds, PCM round trips.

The G.711 reference is ``tests/fixtures/g711/vectors.npz``: the output of CPython's
``audioop`` (Sun's reference g711.c algorithm) for every 16-bit sample and every code, kept
because ``audioop`` left the standard library in Python 3.13. Where ``audioop`` still exists,
a test checks the vectors against it.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest

from voxwire.audio.codecs import (
    ALAW_DECODE_TABLE,
    ALAW_ENCODE_TABLE,
    MULAW_DECODE_TABLE,
    MULAW_ENCODE_TABLE,
    AudioDecodeError,
    Encoding,
    InvalidSamples,
    PcmFormat,
    decode,
    encode,
    float32_to_int16,
    int16_to_float32,
)

VECTORS_PATH = Path(__file__).resolve().parents[2] / "fixtures" / "g711" / "vectors.npz"
with np.load(VECTORS_PATH) as _stored:
    VECTORS = {name: _stored[name] for name in _stored.files}

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = np.arange(256, dtype=np.uint8)
G711 = [Encoding.MULAW, Encoding.ALAW]


def _g711_round_trip(encoding: Encoding, pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, reconstructed int16) for int16 input through our float API."""
    codes = np.frombuffer(encode(int16_to_float32(pcm), encoding), dtype=np.uint8)
    decoded = decode(codes.tobytes(), PcmFormat(encoding, 8000))
    return codes, float32_to_int16(decoded)


# --- bit-exactness against the reference ----------------------------------------------------
@pytest.mark.parametrize(
    ("encoding", "vector"), [(Encoding.MULAW, "ulaw_encoded"), (Encoding.ALAW, "alaw_encoded")]
)
def test_g711_encode_bit_exact_with_the_reference_for_all_int16(
    encoding: Encoding, vector: str
) -> None:
    expected = VECTORS[vector]
    assert expected.shape == (65536,)
    assert encode(int16_to_float32(ALL_INT16), encoding) == expected.tobytes()


@pytest.mark.parametrize(
    ("table", "vector"), [(MULAW_DECODE_TABLE, "ulaw_decoded"), (ALAW_DECODE_TABLE, "alaw_decoded")]
)
def test_g711_decode_table_bit_exact_with_the_reference(table: np.ndarray, vector: str) -> None:
    assert VECTORS[vector].shape == (256,)
    np.testing.assert_array_equal(table, VECTORS[vector])


@pytest.mark.skipif(
    importlib.util.find_spec("audioop") is None, reason="audioop is gone (Python 3.13+)"
)
def test_the_reference_vectors_are_audioops_output() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # PEP 594
        import audioop
    samples, codes = ALL_INT16.astype("<i2").tobytes(), ALL_CODES.tobytes()
    assert VECTORS["ulaw_encoded"].tobytes() == audioop.lin2ulaw(samples, 2)
    assert VECTORS["alaw_encoded"].tobytes() == audioop.lin2alaw(samples, 2)
    assert VECTORS["ulaw_decoded"].astype("<i2").tobytes() == audioop.ulaw2lin(codes, 2)
    assert VECTORS["alaw_decoded"].astype("<i2").tobytes() == audioop.alaw2lin(codes, 2)


@pytest.mark.parametrize(
    ("encoding", "table"),
    [(Encoding.MULAW, MULAW_DECODE_TABLE), (Encoding.ALAW, ALAW_DECODE_TABLE)],
)
def test_g711_decode_is_table_value_over_32768(encoding: Encoding, table: np.ndarray) -> None:
    decoded = decode(ALL_CODES.tobytes(), PcmFormat(encoding, 8000))
    np.testing.assert_array_equal(decoded, table.astype(np.float32) / 32768)


def test_tables_are_read_only() -> None:
    for table in (MULAW_ENCODE_TABLE, ALAW_ENCODE_TABLE, MULAW_DECODE_TABLE, ALAW_DECODE_TABLE):
        assert not table.flags.writeable


# --- decode tables are the inverse of the encoder --------------------------------------------
def test_alaw_encode_inverts_decode_on_all_256_codes() -> None:
    codes, _ = _g711_round_trip(Encoding.ALAW, ALAW_DECODE_TABLE)
    np.testing.assert_array_equal(codes, ALL_CODES)


def test_mulaw_encode_inverts_decode_on_all_codes_but_negative_zero() -> None:
    codes, _ = _g711_round_trip(Encoding.MULAW, MULAW_DECODE_TABLE)
    # G.711 mu-law has two zeros: 0xFF (+0) and 0x7F (-0). Both decode to 0, which encodes
    # to 0xFF, so 0x7F is the one code that is never produced.
    expected = ALL_CODES.copy()
    expected[0x7F] = 0xFF
    np.testing.assert_array_equal(codes, expected)
    assert MULAW_DECODE_TABLE[0x7F] == MULAW_DECODE_TABLE[0xFF] == 0


# --- quantisation error bounds (ITU-T G.711) ---------------------------------------------------
def test_mulaw_round_trip_error_within_g711_segment_bound() -> None:
    codes, decoded = _g711_round_trip(Encoding.MULAW, ALL_INT16)
    x = ALL_INT16.astype(np.int64)
    error = np.abs(decoded.astype(np.int64) - x)
    # Mu-law quantises 14-bit samples (x >> 2, truncation error <= 3 in 16-bit units).
    # Segment s has 16 intervals of step 2**(s+1) (14-bit) = 2**(s+3) (16-bit) and the
    # decoder reconstructs mid-interval, so |error| <= step/2 + 3 = 2**(s+2) + 3.
    segment = ((~codes.astype(np.int64)) >> 4) & 0x7
    peak = int(MULAW_DECODE_TABLE.max())  # 32124, the top reconstruction level
    in_range = np.abs(x) <= peak + 512  # above this the quantiser overloads (clips)
    assert (error[in_range] <= (1 << (segment[in_range] + 2)) + 3).all()
    # Equivalently, half a step is at most 1/32 of the biased magnitude (4-bit mantissa per
    # octave, which is what makes the law logarithmic): with the bias of 132 and the <= 3 of
    # the 14-bit truncation, |error| <= (|x| + 3 + 132) / 32 + 3, tight at segment starts.
    assert (error[in_range] <= (np.abs(x[in_range]) + 135) / 32 + 3).all()
    assert (error[in_range] > (np.abs(x[in_range]) + 135) / 32 + 2).any()
    # Overload: the output saturates at the top level.
    np.testing.assert_array_equal(np.abs(decoded[~in_range]), peak)
    assert error.max() == 32768 - peak  # 644, at -32768


def test_alaw_round_trip_error_within_g711_segment_bound() -> None:
    codes, decoded = _g711_round_trip(Encoding.ALAW, ALL_INT16)
    x = ALL_INT16.astype(np.int64)
    error = np.abs(decoded.astype(np.int64) - x)
    # A-law quantises 13-bit samples; segments 0 and 1 share step 16 (16-bit units), segment
    # s >= 2 has step 2**(s+3); reconstruction is mid-interval, so |error| <= step/2.
    segment = ((codes.astype(np.int64) ^ 0x55) >> 4) & 0x7
    half_step = np.where(segment < 2, 8, 1 << (segment + 2))
    assert (error <= half_step).all()
    # Relative error at most 2**-5 above the linear segments (|x| >= 256); no overload.
    big = np.abs(x) >= 256
    assert (error[big] <= np.abs(x[big]) / 32).all()


@pytest.mark.parametrize("encoding", G711)
def test_g711_is_monotonic_and_odd_symmetric(encoding: Encoding) -> None:
    _, decoded = _g711_round_trip(encoding, ALL_INT16)
    assert (np.diff(decoded.astype(np.int64)) >= 0).all()
    table = MULAW_DECODE_TABLE if encoding is Encoding.MULAW else ALAW_DECODE_TABLE
    np.testing.assert_array_equal(np.sort(table[:128]), np.sort(-table[128:]))


# --- PCM16 and float32 ------------------------------------------------------------------------
def test_pcm16_round_trip_is_exact_for_all_int16() -> None:
    fmt = PcmFormat(Encoding.PCM_S16LE, 16000)
    data = ALL_INT16.astype("<i2").tobytes()
    samples = decode(data, fmt)
    assert samples.dtype == np.float32
    assert samples.min() == -1.0 and samples.max() == 32767 / 32768
    assert encode(samples, Encoding.PCM_S16LE) == data
    np.testing.assert_array_equal(float32_to_int16(int16_to_float32(ALL_INT16)), ALL_INT16)


def test_float32_to_int16_rounds_half_to_even_and_saturates() -> None:
    x = np.array([0.5, 1.5, -0.5, 2.5, 32766.6, 40000.0, -40000.0], dtype=np.float32) / 32768
    np.testing.assert_array_equal(float32_to_int16(x), [0, 2, 0, 2, 32767, 32767, -32768])
    np.testing.assert_array_equal(float32_to_int16(np.array([1.0, -1.0])), [32767, -32768])


def test_f32_round_trip_is_exact_and_clips_to_unit_range() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, 4000).astype(np.float32)
    fmt = PcmFormat(Encoding.PCM_F32LE, 24000)
    data = encode(x, Encoding.PCM_F32LE)
    assert len(data) == 4 * x.size
    np.testing.assert_array_equal(decode(data, fmt), x)
    loud = np.array([1.5, -3.0, 0.25], dtype="<f4").tobytes()
    np.testing.assert_array_equal(decode(loud, fmt), [1.0, -1.0, 0.25])
    np.testing.assert_array_equal(
        np.frombuffer(encode(np.array([2.0, -2.0], dtype=np.float32), Encoding.PCM_F32LE), "<f4"),
        [1.0, -1.0],
    )


@pytest.mark.parametrize("encoding", list(Encoding))
def test_decode_returns_fresh_writable_float32(encoding: Encoding) -> None:
    x = np.linspace(-0.9, 0.9, 160, dtype=np.float32)
    out = decode(encode(x, encoding), PcmFormat(encoding, 8000))
    assert out.dtype == np.float32 and out.ndim == 1 and out.size == 160
    assert out.flags.writeable and out.flags.c_contiguous
    assert np.abs(out - x).max() < 0.04  # G.711 worst relative error ~1/32 at this level
    assert decode(b"", PcmFormat(encoding, 8000)).size == 0


# --- stereo downmix ---------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", list(Encoding))
def test_stereo_is_downmixed_by_mean(encoding: Encoding) -> None:
    left = np.array([0.5, -0.5, 0.25, 0.0], dtype=np.float32)
    right = np.array([0.25, 0.5, -0.75, 0.0], dtype=np.float32)
    mono = PcmFormat(encoding, 8000, 1)
    expected = (decode(encode(left, encoding), mono) + decode(encode(right, encoding), mono)) / 2
    interleaved = np.empty(left.size * 2, dtype=np.float32)
    interleaved[0::2], interleaved[1::2] = left, right
    stereo = decode(encode(interleaved, encoding), PcmFormat(encoding, 8000, 2))
    np.testing.assert_array_equal(stereo, expected)


# --- malformed input raises ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("encoding", "channels", "nbytes"),
    [
        (Encoding.PCM_S16LE, 1, 3),  # odd-length PCM16
        (Encoding.PCM_S16LE, 2, 6),  # stereo PCM16 not a multiple of 4
        (Encoding.PCM_F32LE, 1, 6),
        (Encoding.PCM_F32LE, 2, 12),
        (Encoding.MULAW, 2, 5),
        (Encoding.ALAW, 2, 1),
    ],
)
def test_misaligned_input_raises(encoding: Encoding, channels: int, nbytes: int) -> None:
    fmt = PcmFormat(encoding, 16000, channels)
    with pytest.raises(AudioDecodeError, match="whole number"):
        decode(b"\x00" * nbytes, fmt)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_f32_raises(bad: float) -> None:
    data = np.array([0.0, bad, 0.5], dtype="<f4").tobytes()
    with pytest.raises(InvalidSamples, match="NaN or infinity"):  # not misaligned audio
        decode(data, PcmFormat(Encoding.PCM_F32LE, 16000))


@pytest.mark.parametrize("channels", [0, 3, -1])
def test_unsupported_channel_count_raises(channels: int) -> None:
    with pytest.raises(AudioDecodeError):
        PcmFormat(Encoding.PCM_S16LE, 16000, channels)


@pytest.mark.parametrize("rate", [0, -8000, 16000.0, True])
def test_bad_sample_rate_raises(rate: object) -> None:
    with pytest.raises(AudioDecodeError):
        PcmFormat(Encoding.PCM_S16LE, rate, 1)  # type: ignore[arg-type]


def test_encode_rejects_bad_arrays() -> None:
    with pytest.raises(TypeError):
        encode(np.zeros(4, dtype=np.int16), Encoding.MULAW)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mono"):
        encode(np.zeros((4, 2), dtype=np.float32), Encoding.PCM_S16LE)
    with pytest.raises(ValueError, match="NaN"):
        encode(np.array([0.0, np.nan], dtype=np.float32), Encoding.ALAW)


# --- PcmFormat arithmetic ------------------------------------------------------------------------
def test_pcm_format_sizes() -> None:
    assert PcmFormat(Encoding.PCM_S16LE, 16000, 2).bytes_per_frame == 4
    assert PcmFormat(Encoding.PCM_F32LE, 48000, 2).bytes_per_frame == 8
    assert PcmFormat(Encoding.MULAW, 8000).bytes_per_second == 8000
    fmt = PcmFormat(Encoding.PCM_S16LE, 16000)
    assert fmt.frames_in(3200) == 1600
    assert fmt.nbytes_for(1600) == 3200
    assert fmt.duration_s(3200) == pytest.approx(0.1)
    with pytest.raises(AudioDecodeError):
        fmt.frames_in(-2)
    assert Encoding("pcm_s16le") is Encoding.PCM_S16LE
