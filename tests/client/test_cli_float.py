"""``voxwire transcribe FILE`` with floating-point WAVs, through the real stack.

libsndfile does not scale float samples when they are read as integers: read as int16, a
float WAV in [-1, 1] comes out as -1, 0 and 1, silence to the model. The CLI reads float32 and
scales, so a float WAV is heard like the 16-bit file it was made from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr

from tests.client.cli_process import run_voxwire
from tests.helpers.edge import Edge
from tests.helpers.speech_fixtures import SPEECH_DIR, TRANSCRIPTS

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize("subtype", ["FLOAT", "DOUBLE"])
async def test_a_float_wav_is_heard_like_its_16_bit_original(
    edge: Edge, tmp_path: Path, subtype: str
):
    samples, rate = soundfile.read(SPEECH_DIR / "pay_bill.wav", dtype="float64")
    path = tmp_path / f"pay_bill_{subtype.lower()}.wav"
    soundfile.write(path, samples, rate, subtype=subtype)
    run = await run_voxwire("transcribe", str(path), "--url", edge.ws, key=edge.key)
    assert run.status == 0, run.err
    assert run.out.strip() == TRANSCRIPTS["pay_bill.wav"] == "i would like to pay my bill"


async def test_a_float_wav_beyond_full_scale_is_clipped_not_wrapped(edge: Edge, tmp_path: Path):
    samples, rate = soundfile.read(SPEECH_DIR / "pay_bill.wav", dtype="float32")
    path = tmp_path / "loud.wav"
    # Peaks at 1.5x full scale. Clipped, the model still hears the sentence; wrapped around
    # (int16 overflow), it heard "i'd like to pack the bottom" when this test was written.
    soundfile.write(path, samples * (1.5 / np.abs(samples).max()), rate, subtype="FLOAT")
    run = await run_voxwire("transcribe", str(path), "--url", edge.ws, key=edge.key)
    assert run.status == 0, run.err
    assert run.out.strip() == TRANSCRIPTS["pay_bill.wav"]


@pytest.mark.parametrize("bad", [np.nan, np.inf])
async def test_a_float_wav_with_nan_or_inf_is_refused(edge: Edge, tmp_path: Path, bad: float):
    samples, rate = soundfile.read(SPEECH_DIR / "pay_bill.wav", dtype="float32")
    samples[rate] = bad  # one second in
    path = tmp_path / "broken.wav"
    soundfile.write(path, samples, rate, subtype="FLOAT")
    run = await run_voxwire("transcribe", str(path), "--url", edge.ws, key=edge.key)
    assert run.status == 1, run.err
    assert f"{path}: " in run.err and "NaN or infinity" in run.err and "1.00 s" in run.err
    assert "Traceback" not in run.err


@pytest.mark.parametrize(("rate_out", "channels"), [(96_000, 2), (10_000, 1)])
async def test_a_file_at_a_rate_the_contract_does_not_carry_is_resampled(
    edge: Edge, tmp_path: Path, rate_out: int, channels: int
):
    # Sent at its own rate, a 96 kHz file was refused by the gateway (UNSUPPORTED_SAMPLE_RATE);
    # it goes at 48 kHz now (10 kHz at 11.025 kHz), as the gateway's own uploads do.
    samples, rate = soundfile.read(SPEECH_DIR / "pay_bill.wav", dtype="float32")
    audio = soxr.resample(samples, rate, rate_out)
    path = tmp_path / f"pay_bill_{rate_out}.wav"
    soundfile.write(path, np.stack([audio] * channels, axis=1), rate_out, subtype="PCM_16")
    run = await run_voxwire("transcribe", str(path), "--url", edge.ws, key=edge.key)
    assert run.status == 0, run.err
    heard = run.out.strip().split()
    assert len(set(heard) & set(TRANSCRIPTS["pay_bill.wav"].split())) >= 4, run.out
