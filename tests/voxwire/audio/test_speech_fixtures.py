"""The speech fixtures and test helpers are what tests downstream rely on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers.speech_fixtures import SPEECH_DIR, TRANSCRIPTS, WER_EXEMPT
from tests.helpers.wavio import read_wav, write_wav
from tests.helpers.wer import normalize_words, word_error_rate
from voxwire.audio.codecs import Encoding, PcmFormat, decode


def test_every_wav_has_a_transcript_and_vice_versa() -> None:
    assert sorted(TRANSCRIPTS) == sorted(p.name for p in SPEECH_DIR.glob("*.wav"))
    assert len(TRANSCRIPTS) == 9
    assert set(WER_EXEMPT) <= set(TRANSCRIPTS) and all(WER_EXEMPT.values())
    assert sum(p.stat().st_size for p in SPEECH_DIR.glob("*.wav")) < 1_000_000


@pytest.mark.parametrize("name", sorted(TRANSCRIPTS))
def test_fixture_format_and_text(name: str) -> None:
    samples, rate = read_wav(SPEECH_DIR / name)
    assert rate == 16000 and samples.ndim == 1 and samples.dtype == np.int16
    seconds = samples.size / rate
    assert 2.0 <= seconds <= (6.0 if name == "two_sentences_gap.wav" else 4.0)
    assert np.abs(samples.astype(np.int32)).max() > 8000  # real speech, not silence
    text = TRANSCRIPTS[name]
    assert text == " ".join(normalize_words(text))  # lowercase, no punctuation
    # The wire decoder reads the same bytes.
    pcm = samples.astype("<i2").tobytes()
    np.testing.assert_array_equal(
        decode(pcm, PcmFormat(Encoding.PCM_S16LE, rate)), samples.astype(np.float32) / 32768
    )


def test_gap_fixture_has_one_and_a_half_seconds_of_silence() -> None:
    samples, rate = read_wav(SPEECH_DIR / "two_sentences_gap.wav")
    loud = np.abs(samples.astype(np.int32)) > 64
    edges = np.flatnonzero(np.diff(loud.astype(np.int8)))
    gaps = np.diff(edges)[1::2] / rate  # lengths of the quiet runs between loud runs
    assert gaps.max() == pytest.approx(1.5, abs=0.01)
    start = int(2.809 * rate) + 1
    assert not samples[start + 400 : start + int(1.4 * rate)].any()  # digital zeros


def test_pocketsphinx_decodes_one_fixture_exactly() -> None:
    pocketsphinx = pytest.importorskip("pocketsphinx")
    samples, rate = read_wav(SPEECH_DIR / "call_me_back.wav")
    decoder = pocketsphinx.Decoder(samprate=rate, loglevel="FATAL")
    decoder.start_utt()
    decoder.process_raw(samples.tobytes(), full_utt=True)
    decoder.end_utt()
    assert word_error_rate(TRANSCRIPTS["call_me_back.wav"], decoder.hyp().hypstr) == 0.0


def test_word_error_rate() -> None:
    assert word_error_rate("Please call me back!", "please call me back") == 0.0
    assert word_error_rate("please call me back", "please call be back") == 0.25
    assert word_error_rate("a b c", "a c") == pytest.approx(1 / 3)  # deletion
    assert word_error_rate("a b", "a x b y") == 1.0  # two insertions
    assert word_error_rate("", "") == 0.0
    assert word_error_rate("", "x") == float("inf")
    assert normalize_words("It's 9 o'clock, OK?") == ["it's", "9", "o'clock", "ok"]


def test_wav_round_trip(tmp_path: Path) -> None:
    stereo = np.arange(-300, 300, dtype=np.int16).reshape(-1, 2)
    write_wav(tmp_path / "s.wav", stereo, 8000)
    back, rate = read_wav(tmp_path / "s.wav")
    assert rate == 8000
    np.testing.assert_array_equal(back, stereo)
    with pytest.raises(TypeError):
        write_wav(tmp_path / "f.wav", stereo.astype(np.float32), 8000)  # type: ignore[arg-type]
