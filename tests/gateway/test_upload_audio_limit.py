"""POST /v1/stt's audio limit (``max_upload_audio_seconds``): bytes do not bound audio.

FLAC of silence holds hours in a few megabytes: before the limit, a 1.4 MB upload held 5 h
of audio and kept the model busy until the adapter's hour of stream time ran out. A gateway
of its own, in front of the recording adapter (``front``), with a 3 s limit.
"""

from __future__ import annotations

import asyncio
import io
import struct
from collections.abc import AsyncIterator

import aiohttp
import numpy as np
import pytest
import pytest_asyncio
import soundfile

from gateway.server import GatewayServer
from tests.gateway.conftest import InstrumentedEdge
from tests.helpers.edge import keyed_gateway
from tests.helpers.speech_fixtures import SPEECH_DIR, TRANSCRIPTS
from tests.helpers.wavio import read_wav
from tests.helpers.wer import word_error_rate

pytestmark = pytest.mark.asyncio(loop_scope="session")

LIMIT_S = 3.0
RATE = 16000
NAME = "kitchen_lights.wav"  # under 3 s of speech
RAW_16K = "encoding=pcm_s16le&sample_rate=16000"


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def limited(
    front: InstrumentedEdge, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[GatewayServer, dict[str, str]]]:
    async for gateway in keyed_gateway(
        front.adapter.address,
        tmp_path_factory.mktemp("upload-limit"),
        "upload-limit",
        max_upload_audio_seconds=LIMIT_S,
    ):
        yield gateway


def _pcm(seconds: float) -> np.ndarray:
    speech, rate = read_wav(SPEECH_DIR / NAME)
    assert rate == RATE
    return np.resize(speech, round(seconds * RATE))


def _file(pcm: np.ndarray, fmt: str, subtype: str) -> bytes:
    out = io.BytesIO()
    soundfile.write(out, pcm, RATE, format=fmt, subtype=subtype)
    return out.getvalue()


def _wav_of_unknown_length(pcm: np.ndarray) -> bytes:
    """A WAV as streaming writers leave it: RIFF and data sizes 0xFFFFFFFF."""
    fmt = struct.pack("<HHIIHH", 1, 1, RATE, RATE * 2, 2, 16)
    return (
        b"RIFF\xff\xff\xff\xffWAVEfmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data\xff\xff\xff\xff"
        + pcm.astype("<i2").tobytes()
    )


async def _post(
    limited: tuple[GatewayServer, dict[str, str]],
    body: bytes | AsyncIterator[bytes],
    media: str,
    query: str = "?model=bench_stt",
    length: int | None = None,
) -> tuple[int, dict]:
    server, auth = limited
    headers = {**auth, "Content-Type": media}
    if length is not None:
        headers["Content-Length"] = str(length)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/v1/stt{query}", data=body, headers=headers) as resp:
            return resp.status, await resp.json()


def _refused(status: int, body: dict, says: str) -> None:
    assert (status, body.get("error", {}).get("reason")) == (413, "BODY_TOO_LARGE"), body
    message = body["error"]["message"]
    assert says in message and " 3 s " in message, message


@pytest.mark.parametrize(
    ("fmt", "subtype", "media"),
    [
        ("WAV", "PCM_16", "audio/wav"),
        ("FLAC", "PCM_16", "audio/flac"),
        ("WAV", "PCM_24", "audio/wav"),
    ],
)
async def test_a_header_declaring_too_much_audio_is_refused_before_any_is_sent(
    front, limited, fmt, subtype, media
):
    data = _file(_pcm(LIMIT_S + 0.5), fmt, subtype)
    # The header and some audio (past the 16 KiB a libsndfile open waits for); the rest is
    # held until the answer.
    head = 20_000
    assert len(data) > 2 * head
    release = asyncio.Event()

    async def held() -> AsyncIterator[bytes]:
        yield data[:head]
        await release.wait()
        yield data[head:]

    calls = len(front.recorder.contract_calls())
    try:
        status, body = await asyncio.wait_for(_post(limited, held(), media, length=len(data)), 10)
    finally:
        release.set()
    _refused(status, body, "declares 3.5 s")
    assert front.recorder.contract_calls()[calls:] == []  # the model heard none of it


@pytest.mark.parametrize(
    ("kind", "media", "query"),
    [
        ("wav of unknown length", "audio/wav", "?model=bench_stt"),
        ("raw", "application/octet-stream", f"?model=bench_stt&{RAW_16K}"),
        # libsndfile estimates an MP3's length from its first frame: not trusted, counted.
        ("mp3", "audio/mpeg", "?model=bench_stt"),
    ],
)
async def test_audio_without_a_declared_length_is_refused_once_it_passes_the_limit(
    limited, kind, media, query
):
    pcm = _pcm(LIMIT_S + 1.0)
    data = {
        "wav of unknown length": _wav_of_unknown_length(pcm),
        "raw": pcm.astype("<i2").tobytes(),
        "mp3": _file(pcm, "MP3", "MPEG_LAYER_III"),
    }[kind]
    status, body = await _post(limited, data, media, query)
    _refused(status, body, "passes the most one upload holds")


async def test_audio_up_to_the_limit_is_transcribed(limited):
    speech, _ = read_wav(SPEECH_DIR / NAME)
    pcm = np.concatenate([speech, np.zeros(round(LIMIT_S * RATE) - len(speech), np.int16)])
    for media, data in (
        ("audio/wav", _file(pcm, "WAV", "PCM_16")),
        ("audio/flac", _file(pcm, "FLAC", "PCM_16")),
        ("audio/wav", _wav_of_unknown_length(pcm)),
    ):
        status, body = await _post(limited, data, media, "")  # the real model: heard
        assert status == 200, body
        assert body["audioMs"] == LIMIT_S * 1000, body
        assert word_error_rate(TRANSCRIPTS[NAME], body["transcript"]) <= 0.34, body
