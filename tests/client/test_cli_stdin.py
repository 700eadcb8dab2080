"""``voxwire transcribe -``: stdin as a pipe, a regular file or /dev/null, raw audio that must
say its format, and a WAV stream that carries its own. Each run is the console script as a
subprocess against the session's real gateway."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.client.cli_process import run_voxwire
from tests.client.helpers import assert_heard
from tests.helpers.edge import Edge
from tests.helpers.speech_fixtures import SPEECH_DIR
from tests.helpers.wavio import read_wav

pytestmark = pytest.mark.asyncio(loop_scope="session")

MULAW = SPEECH_DIR / "telephony" / "pay_bill.mulaw"  # headerless G.711 mu-law, 8 kHz
MULAW_FLAGS = ("--encoding", "mulaw", "--rate", "8000")


async def test_dev_null_on_stdin_ends_the_session_with_no_words(edge: Edge):
    # epoll refuses /dev/null: the reader must not hand it to the event loop (it used to
    # log a PermissionError and then wait forever).
    run = await run_voxwire(
        "transcribe", "-", *MULAW_FLAGS, "--url", edge.ws, key=edge.key, timeout_s=30
    )
    assert run.status == 0, run.err
    assert run.out == ""
    assert "Traceback" not in run.err and "stdin" in run.err  # says there was no audio


async def test_dev_null_on_stdin_with_json_prints_started_and_summary(edge: Edge):
    run = await run_voxwire(
        "transcribe", "-", *MULAW_FLAGS, "--json", "--url", edge.ws, key=edge.key, timeout_s=30
    )
    assert run.status == 0, run.err
    assert [line.split('"')[1] for line in run.out.splitlines()] == ["started", "summary"]


async def test_a_regular_file_and_a_pipe_on_stdin_are_both_read(edge: Edge):
    from_file = await run_voxwire(
        "transcribe", "-", *MULAW_FLAGS, "--url", edge.ws, key=edge.key, stdin=MULAW
    )
    assert from_file.status == 0, from_file.err
    assert_heard(from_file.out.strip(), "pay_bill.wav")
    piped = await run_voxwire(
        "transcribe", "-", *MULAW_FLAGS, "--url", edge.ws, key=edge.key, stdin=MULAW.read_bytes()
    )
    assert piped.status == 0, piped.err
    assert piped.out == from_file.out


async def test_pcm_on_stdin_declared_as_mulaw_is_warned_about_on_stderr(edge: Edge):
    # A raw PCM recording with the telephone flags: before, the words were static and the
    # command said nothing of why. The transcripts on stdout stay clean.
    pcm = (SPEECH_DIR / "pay_bill.wav").read_bytes()[44:]
    run = await run_voxwire(
        "transcribe", "-", *MULAW_FLAGS, "--url", edge.ws, key=edge.key, stdin=pcm
    )
    assert run.status == 0, run.err
    assert "voxwire: warning: " in run.err and "MULAW as declared" in run.err
    assert "warning" not in run.out
    clean = await run_voxwire(
        "transcribe", "-", *MULAW_FLAGS, "--url", edge.ws, key=edge.key, stdin=MULAW
    )
    assert "warning" not in clean.err


@pytest.mark.parametrize("flags", [(), ("--rate", "8000"), ("--encoding", "mulaw")])
async def test_raw_stdin_without_its_format_is_a_usage_error(edge: Edge, flags: tuple[str, ...]):
    # Without the format the bytes used to be taken as 16 kHz pcm_s16le: garbage words.
    run = await run_voxwire(
        "transcribe", "-", *flags, "--url", edge.ws, key=edge.key, stdin=MULAW.read_bytes()
    )
    assert run.status == 2, run.err
    assert run.out == ""
    assert "--encoding" in run.err and "--rate" in run.err
    assert "Traceback" not in run.err


def _wav_bytes(subtype: str) -> bytes:
    pcm, rate = read_wav(SPEECH_DIR / "pay_bill.wav")
    buffer = io.BytesIO()
    soundfile.write(buffer, pcm.astype(np.float32) / 32768, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
async def test_a_wav_on_stdin_brings_its_own_format(edge: Edge, subtype: str):
    run = await run_voxwire(
        "transcribe", "-", "--url", edge.ws, key=edge.key, stdin=_wav_bytes(subtype)
    )
    assert run.status == 0, run.err
    assert_heard(run.out.strip(), "pay_bill.wav")


async def test_a_mulaw_wav_on_stdin_brings_its_own_format(edge: Edge):
    data = MULAW.read_bytes()
    fmt = b"".join(
        n.to_bytes(size, "little")
        # WAVE_FORMAT_MULAW, mono, 8000 Hz, 8000 bytes/s, 1-byte frames, 8 bits, no extension
        for n, size in ((7, 2), (1, 2), (8000, 4), (8000, 4), (1, 2), (8, 2), (0, 2))
    )
    body = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt
    body += b"LIST" + (4).to_bytes(4, "little") + b"INFO"  # a chunk to skip before the data
    body += b"data" + len(data).to_bytes(4, "little") + data
    run = await run_voxwire(
        "transcribe",
        "-",
        "--url",
        edge.ws,
        key=edge.key,
        stdin=b"RIFF" + len(body).to_bytes(4, "little") + body,
    )
    assert run.status == 0, run.err
    assert_heard(run.out.strip(), "pay_bill.wav")


async def test_a_wav_on_stdin_cut_inside_a_sample_is_heard_up_to_the_cut(edge: Edge):
    # It ended with "stdin ended inside a sample frame (1 stray bytes)", status 1, after
    # sending everything but saying nothing of the cut.
    wav = _wav_bytes("PCM_16")
    run = await run_voxwire(
        "transcribe", "-", "--url", edge.ws, key=edge.key, stdin=wav[: len(wav) * 9 // 10 | 1]
    )
    assert run.status == 1, run.err
    assert run.out.strip(), "the words before the cut are printed"
    assert len(run.err.strip().splitlines()) == 1, run.err
    assert "stdin (WAV) ended " in run.err and "cut short" in run.err, run.err
    assert "stray" not in run.err


async def test_a_wav_stream_of_unknown_length_may_end_inside_a_sample(edge: Edge):
    # A producer writing to a pipe leaves the sizes unknown (0xFFFFFFFF) and stops anywhere:
    # the sample frame it split is dropped, nothing else is wrong.
    wav = bytearray(_wav_bytes("PCM_16"))
    wav[4:8] = wav[40:44] = b"\xff\xff\xff\xff"  # RIFF and data sizes: unknown
    run = await run_voxwire(
        "transcribe", "-", "--url", edge.ws, key=edge.key, stdin=bytes(wav) + b"\x01"
    )
    assert run.status == 0, run.err
    assert_heard(run.out.strip(), "pay_bill.wav")


async def test_raw_stdin_that_ends_inside_a_sample_is_refused(edge: Edge):
    # Raw bytes out of step with their flags are often the wrong flags (mu-law as PCM16).
    pcm, _ = read_wav(SPEECH_DIR / "pay_bill.wav")
    run = await run_voxwire(
        "transcribe",
        *("-", "--encoding", "pcm_s16le", "--rate", "16000", "--url", edge.ws),
        key=edge.key,
        stdin=pcm.astype("<i2").tobytes() + b"\x01",
    )
    assert run.status == 1, run.err
    assert "stdin ended inside a sample frame (1 stray bytes)" in run.err, run.err


async def test_a_wav_on_stdin_whose_header_contradicts_the_flags_is_a_usage_error(edge: Edge):
    run = await run_voxwire(
        "transcribe",
        "-",
        "--rate",
        "8000",
        "--url",
        edge.ws,
        key=edge.key,
        stdin=_wav_bytes("PCM_16"),
    )
    assert run.status == 2, run.err
    assert "16000" in run.err and "8000" in run.err


async def test_flac_on_stdin_is_refused_with_a_pointer_to_the_file_argument(
    edge: Edge, tmp_path: Path
):
    pcm, rate = read_wav(SPEECH_DIR / "pay_bill.wav")
    flac = tmp_path / "pay_bill.flac"
    soundfile.write(flac, pcm, rate)
    run = await run_voxwire(
        "transcribe", "-", "--url", edge.ws, key=edge.key, stdin=flac.read_bytes()
    )
    assert run.status == 2, run.err
    assert "FLAC" in run.err and "Traceback" not in run.err


async def test_a_recorders_streaming_header_on_stdin_is_an_unknown_length(edge: Edge):
    # `arecord -f S16_LE -r 16000 | voxwire transcribe -` stopped by anything but a duration:
    # arecord's header declares 2 GiB (it cannot seek a pipe), and the command ended with
    # "stdin (WAV) ended 2.06 s in, before the 67108.86 s its header declares", status 1.
    wav = bytearray(_wav_bytes("PCM_16"))
    wav[4:8] = (0x8000_0024).to_bytes(4, "little")
    wav[40:44] = (0x8000_0000).to_bytes(4, "little")
    run = await run_voxwire("transcribe", "-", "--url", edge.ws, key=edge.key, stdin=bytes(wav))
    assert run.status == 0, run.err
    assert_heard(run.out.strip(), "pay_bill.wav")
    assert run.err.strip() == "", run.err


@pytest.mark.parametrize(
    ("rate", "channels", "named"),
    [(96000, 1, ("96000 Hz", "16000")), (16000, 3, ("3 channels", "at most 2"))],
)
async def test_a_wav_on_stdin_the_stream_cannot_carry_names_what_is_wrong(
    edge: Edge, rate: int, channels: int, named: tuple[str, ...]
):
    # A 96 kHz WAV was refused with "WAV of 1 channels at 96000 Hz; a WAV stream carries 16-bit
    # PCM, 32-bit float, mu-law or A-law, 1 or 2 channels": the one thing wrong, its rate, was
    # not said to be wrong, nor which rates go.
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros((1600, channels), np.float32), rate, format="WAV")
    run = await run_voxwire(
        "transcribe", "-", "--url", edge.ws, key=edge.key, stdin=buffer.getvalue()
    )
    assert run.status == 2, run.err
    assert "Traceback" not in run.err
    for part in (*named, "give the file as FILE"):
        assert part in run.err, run.err
