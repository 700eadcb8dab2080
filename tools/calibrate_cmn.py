"""Derive ``stt_pocketsphinx``'s two cepstral-mean priors from speech the tests never use.

Usage (from the repository root)::

    .venv/bin/python -m tools.calibrate_cmn            # print both priors
    .venv/bin/python -m tools.calibrate_cmn --check    # exit 1 if config.pbtxt differs

Why: pocketsphinx normalises each cepstral frame by a running mean (live CMN) that it updates
slowly, so the first seconds of a stream are decoded against the decoder's starting mean. A
mean carried over from whatever stream the pooled decoder served last made one caller's
transcript depend on the previous caller's line (a 16 kHz stream after G.711 ones lost words),
so every sequence now starts from a fixed prior of its band (``stt_engine.DecoderPool``).

The priors are the whole-utterance (batch) cepstral means of eSpeak NG speech: ten Harvard
sentences (IEEE 1969 list 1) in four eSpeak voices, resampled to 16 kHz (``cmn_init``) and sent
through the test set's telephone channel, G.711 mu-law and A-law at 8 kHz and back to 16 kHz as
the adapter resamples it (``cmn_init_narrowband``). The speech fixtures are CMU Flite's voice
saying other sentences, so the priors are calibrated on a voice and text held out from every
accuracy test. eSpeak NG's output varies slightly from run to run (its klatt noise source), so
the means move in the second decimal: ``--check`` allows ``TOLERANCE`` per coefficient.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soxr

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "model_repository" / "stt_pocketsphinx" / "config.pbtxt"
sys.path.insert(0, str(ROOT / "model_repository" / "tts_espeak" / "1"))
sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "speech"))

from espeak_ng import EspeakNG  # noqa: E402
from make_telephony import phone_band  # noqa: E402

from voxwire.audio.codecs import Encoding, PcmFormat, decode, encode  # noqa: E402

RATE_HZ = 16000
PHONE_RATE_HZ = 8000
VOICES = ("en-us", "en", "en-us+f3", "en+m3")
HARVARD_LIST_1 = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
)
TOLERANCE = 0.1
KEYS = {"wideband": "cmn_init", "narrowband": "cmn_init_narrowband"}


def _pcm16(samples: npt.NDArray[np.floating]) -> npt.NDArray[np.int16]:
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2")


def batch_mean(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.float64]:
    """pocketsphinx's cepstral mean over one whole utterance (``full_utt``: batch CMN)."""
    from pocketsphinx import Decoder

    decoder = Decoder(samprate=RATE_HZ, loglevel="FATAL")
    decoder.start_utt()
    decoder.process_raw(pcm.tobytes(), full_utt=True)
    decoder.end_utt()
    return np.array([float(x) for x in decoder.get_cmn().split(",")])


def _speak(engine: EspeakNG, sentence: str) -> npt.NDArray[np.int16]:
    chunks: list[npt.NDArray[np.int16]] = []

    def keep(samples: npt.NDArray[np.int16], _marks: object) -> bool:
        chunks.append(samples)
        return True

    engine.synthesize(sentence, 0, keep)
    return np.concatenate(chunks)


def priors() -> dict[str, str]:
    engine = EspeakNG(buffer_ms=100)
    means: dict[str, list[npt.NDArray[np.float64]]] = {"wideband": [], "narrowband": []}
    for voice in VOICES:
        engine.set_voice(voice)
        for sentence in HARVARD_LIST_1:
            speech = soxr.resample(
                _speak(engine, sentence).astype(np.float64) / 32768.0,
                engine.sample_rate,
                RATE_HZ,
                quality="HQ",
            )
            wide = _pcm16(speech)
            means["wideband"].append(batch_mean(wide))
            narrow = phone_band(wide)
            for encoding in (Encoding.MULAW, Encoding.ALAW):
                line = decode(encode(narrow, encoding), PcmFormat(encoding, PHONE_RATE_HZ, 1))
                back = soxr.resample(line, PHONE_RATE_HZ, RATE_HZ, quality="HQ")
                means["narrowband"].append(batch_mean(_pcm16(back)))
    return {
        band: ",".join(f"{x:.2f}" for x in np.mean(vectors, axis=0))
        for band, vectors in means.items()
    }


def configured() -> dict[str, str | None]:
    text = CONFIG.read_text()
    out: dict[str, str | None] = {}
    for band, key in KEYS.items():
        found = re.search(rf'key: "{key}" value: {{ string_value: "([^"]+)" }}', text)
        out[band] = found.group(1) if found else None
    return out


def _close(have: str | None, derived: str) -> bool:
    if have is None:
        return False
    a, b = (np.array([float(x) for x in v.split(",")]) for v in (have, derived))
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= TOLERANCE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with config.pbtxt")
    args = parser.parse_args(argv)
    derived = priors()
    have = configured()
    same = True
    for band, key in KEYS.items():
        close = _close(have[band], derived[band])
        same = same and close
        print(f'{key}: "{derived[band]}"' + ("" if close else "   (config.pbtxt differs)"))
    return 1 if args.check and not same else 0


if __name__ == "__main__":
    sys.exit(main())
