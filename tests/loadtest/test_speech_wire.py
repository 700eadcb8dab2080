"""The speech set in a client's wire format (loadtest.speech.to_wire): telephony runs."""

from __future__ import annotations

import numpy as np

from loadtest.scenario import Scenario
from loadtest.speech import chunk_audio, load_speech, session_audio, to_wire, wire_speech
from tests.helpers.speech_fixtures import SPEECH_DIR
from voxwire.audio.codecs import Encoding, PcmFormat, decode


def test_mulaw_at_8_khz_is_the_speech_resampled_and_encoded_once():
    files = load_speech(SPEECH_DIR)
    wire = to_wire(files, Encoding.MULAW, 8000)
    for before, after in zip(files, wire, strict=True):
        assert (after.rate_hz, after.encoding, after.transcript) == (
            8000,
            Encoding.MULAW,
            before.transcript,
        )
        assert abs(after.seconds - before.seconds) < 0.001  # one byte a sample at 8 kHz
        # The same speech: decoded and brought back to 16 kHz it follows the original.
        heard = decode(after.pcm, PcmFormat(Encoding.MULAW, 8000, 1))
        original = np.frombuffer(before.pcm, "<i2")[::2].astype(np.float32) / 32768
        n = min(heard.size, original.size)
        assert np.corrcoef(heard[:n], original[:n])[0, 1] > 0.8


def test_twilio_frames_are_160_bytes_and_sessions_cut_on_whole_samples():
    wire = to_wire(load_speech(SPEECH_DIR)[:2], Encoding.MULAW, 8000)
    audio = session_audio(wire, 0, 0, 1.5)  # cut at 1.5 s
    assert len(audio.pcm) == 12000 and audio.encoding is Encoding.MULAW
    chunks = chunk_audio(audio.pcm, audio.rate_hz, 20, audio.encoding)
    assert {len(c) for c in chunks} == {160} and len(chunks) == 75


def test_a_pcm16_scenario_at_the_sets_own_rate_sends_the_files_as_read():
    s = Scenario()
    assert wire_speech(s) == load_speech(s.stt.speech)
