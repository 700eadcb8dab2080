"""POST /v1/stt: uploads of every accepted kind, streamed into the real model."""

from __future__ import annotations

import asyncio
import io
import struct
import time

import aiohttp
import grpc
import numpy as np
import pytest
import soundfile

from localstack.client import transcribe, transcript
from tests.gateway.conftest import Edge
from tests.helpers.speech_fixtures import SPEECH_DIR, TRANSCRIPTS
from tests.helpers.wavio import read_wav
from tests.helpers.wer import word_error_rate
from voxwire.audio.codecs import Encoding, encode, float32_to_int16, int16_to_float32
from voxwire.edge.http_errors import documented
from voxwire.v1 import audio_pb2

pytestmark = pytest.mark.asyncio(loop_scope="session")

NAME = "call_me_back.wav"

PCM16_16K = audio_pb2.AudioFormat(
    encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=16000, channels=1
)


async def post(edge: Edge, body: bytes, content_type: str, query: str = "") -> tuple[int, dict]:
    headers = {**edge.headers, "Content-Type": content_type}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{edge.server.url}/v1/stt{query}", data=body, headers=headers
        ) as resp:
            return resp.status, await resp.json()


def encoded(fmt: str, subtype: str) -> bytes:
    pcm, rate = read_wav(SPEECH_DIR / NAME)
    out = io.BytesIO()
    soundfile.write(out, pcm, rate, format=fmt, subtype=subtype)
    return out.getvalue()


async def test_a_wav_upload_is_transcribed_with_timings(edge: Edge):
    status, body = await post(edge, (SPEECH_DIR / NAME).read_bytes(), "audio/wav")
    assert status == 200, body
    # One word of slack: this checks the transport (see test_stt_socket.py).
    assert word_error_rate(TRANSCRIPTS[NAME], body["transcript"]) <= 0.125, body["transcript"]
    assert body["audioMs"] > 2000 and int(body["timings"]["computeUs"]) > 0
    # No model in the query: the response names the model the adapter chose (the default).
    assert body["model"] == "stt_pocketsphinx", body


@pytest.mark.parametrize(
    ("fmt", "subtype", "media", "max_wer"),
    [
        ("FLAC", "PCM_16", "audio/flac", 0.125),
        ("WAV", "PCM_24", "audio/wav", 0.125),
        # Lossy codecs change what the recognizer hears: a word may differ, not the whole.
        ("OGG", "VORBIS", "audio/ogg", 0.25),
        ("MP3", "MPEG_LAYER_III", "audio/mpeg", 0.25),
    ],
)
async def test_compressed_and_other_wav_uploads_decode_through_libsndfile(
    edge, fmt, subtype, media, max_wer
):
    status, body = await post(edge, encoded(fmt, subtype), media)
    assert status == 200, body
    assert word_error_rate(TRANSCRIPTS[NAME], body["transcript"]) <= max_wer, body["transcript"]


@pytest.mark.parametrize(
    ("fmt", "subtype", "max_wer"),
    [
        ("FLAC", "PCM_16", 0.125),
        ("OGG", "VORBIS", 0.25),
        ("MP3", "MPEG_LAYER_III", 0.25),
        ("AIFF", "PCM_16", 0.125),
    ],
)
async def test_another_kind_of_file_sent_as_wav_is_decoded_by_its_content(
    edge, fmt, subtype, max_wer
):
    # libsndfile tells a file by its content, so a WAV sent as audio/flac always decoded; the
    # other way round was 400 "not a WAV file" for the very file a client had recorded.
    status, body = await post(edge, encoded(fmt, subtype), "audio/wav")
    assert status == 200, body
    assert word_error_rate(TRANSCRIPTS[NAME], body["transcript"]) <= max_wer, body["transcript"]


async def test_raw_mulaw_with_its_format_in_the_query(edge: Edge):
    # 16 kHz -> 8 kHz by taking every other sample is crude but keeps phone-band speech.
    status, body = await post(edge, _basic_mulaw(), "audio/basic")
    assert status == 200, body
    assert len(body["transcript"].split()) >= 4  # 8 kHz speech: most words survive
    assert "notices" not in body  # audio as declared


async def test_raw_pcm_posted_as_mulaw_says_so_in_its_notices(edge: Edge):
    # audio/basic is 8 kHz mu-law; a 16-bit PCM body was transcribed as static with no word of
    # why (docs/contract.md, "Input that does not match its declared format").
    pcm, rate = read_wav(SPEECH_DIR / NAME)
    status, body = await post(edge, pcm.tobytes(), "audio/basic")
    assert status == 200, body
    assert [n["kind"] for n in body["notices"]] == ["KIND_FORMAT_SUSPECT"], body
    assert "MULAW as declared" in body["notices"][0]["message"]


@pytest.mark.parametrize(
    ("body", "media", "query", "status", "reason"),
    [
        (b"RIFX1234WAVEfmt " + bytes(40), "audio/wav", "", 400, "INVALID_AUDIO"),
        (b"RIFF\x24\x00\x00\x00WAVEdata\x00\x00\x00\x00", "audio/wav", "", 400, "INVALID_AUDIO"),
        (b"not audio at all" * 100, "audio/flac", "", 400, "INVALID_AUDIO"),
        (b"\x00" * 100, "text/html", "", 415, "UNSUPPORTED_MEDIA_TYPE"),
        (b"\x00" * 5 * 1024 * 1024, "audio/wav", "", 413, "BODY_TOO_LARGE"),
        (b"\x00" * 100, "application/octet-stream", "", 400, "INVALID_CONFIG"),
        (
            b"\x00" * 101,
            "application/octet-stream",
            "?encoding=pcm_s16le&sample_rate=16000",
            400,
            "MISALIGNED_AUDIO",
        ),
        # A container is no encoding of raw samples: one the contract does not carry, as the
        # WebSocket's config and POST /v1/tts name it.
        (
            b"\x00" * 100,
            "application/octet-stream",
            "?encoding=flac&sample_rate=16000",
            400,
            "UNSUPPORTED_ENCODING",
        ),
        (b"\x00" * 100, "audio/wav", "?bogus=1", 400, "INVALID_CONFIG"),
        (b"\x00" * 100, "audio/wav", "?word_timestamps=maybe", 400, "INVALID_CONFIG"),
    ],
)
async def test_bad_uploads_get_their_status_and_reason(edge, body, media, query, status, reason):
    got, reply = await post(edge, body, media, query)
    assert (got, reply["error"]["reason"]) == (status, reason), reply
    assert documented("POST", "/v1/stt", reason)  # as the OpenAPI document lists it


async def post_untyped(
    edge: Edge, body: bytes, content_type: str | None, query: str = ""
) -> tuple[int, dict]:
    """``post`` with ``content_type`` None sending no Content-Type at all."""
    if content_type is not None:
        return await post(edge, body, content_type, query)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{edge.server.url}/v1/stt{query}",
            data=body,
            headers=edge.headers,
            skip_auto_headers=["Content-Type"],
        ) as resp:
            return resp.status, await resp.json()


@pytest.mark.parametrize(
    ("kind", "content_type"),
    [
        ("wav", "application/octet-stream"),
        ("wav", None),
        ("flac", "application/octet-stream"),
        ("flac", None),
        ("mp3", "application/octet-stream"),
    ],
)
async def test_a_file_sent_with_no_audio_type_is_known_by_its_first_bytes(
    edge: Edge, kind: str, content_type: str | None
):
    # `curl -T file` and Python's requests with a file send no Content-Type, many SDKs
    # application/octet-stream: such an upload of a WAV was refused "raw audio needs encoding
    # and sample_rate", though its first bytes say what it is (RFC 9110, 8.3).
    body, _ = _file(kind)
    status, reply = await post_untyped(edge, body, content_type)
    assert status == 200, reply
    assert word_error_rate(TRANSCRIPTS[NAME], reply["transcript"]) <= 0.25, reply["transcript"]
    assert "notices" not in reply, reply  # decoded as the file it is, not heard as raw noise


@pytest.mark.parametrize("content_type", ["audio/ogg", "audio/wav", "application/octet-stream"])
async def test_a_file_the_gateway_cannot_decode_is_refused_for_what_it_is(
    edge: Edge, content_type: str
):
    # A browser's MediaRecorder recording (WebM): "cannot decode the audio: Error opening the
    # upload: Format not recognised" (400 INVALID_AUDIO), or as octet-stream "raw audio needs
    # encoding and sample_rate".
    webm = bytes.fromhex("1a45dfa39f4286810142f7810142f2810442f381084282847765626d")
    status, reply = await post_untyped(edge, webm + bytes(4096), content_type)
    error = reply["error"]
    assert (status, error["reason"]) == (415, "UNSUPPORTED_MEDIA_TYPE"), reply
    assert "WebM" in error["message"] and "FLAC" in error["message"], error


@pytest.mark.parametrize("content_type", ["application/octet-stream", None])
async def test_raw_samples_with_no_format_are_refused_naming_both_fields(
    edge: Edge, content_type: str | None
):
    pcm, _ = read_wav(SPEECH_DIR / NAME)
    status, reply = await post_untyped(edge, pcm.tobytes(), content_type)
    error = reply["error"]
    assert (status, error["reason"]) == (400, "INVALID_CONFIG"), reply
    assert [v["field"] for v in error["fieldViolations"]] == ["encoding", "sample_rate"], error
    assert "first bytes" in error["message"], error


async def test_raw_samples_with_no_content_type_and_their_format_are_transcribed(edge: Edge):
    pcm, _ = read_wav(SPEECH_DIR / NAME)
    query = "?encoding=pcm_s16le&sample_rate=16000"
    status, reply = await post_untyped(edge, pcm.tobytes(), None, query)
    assert status == 200, reply  # was 415: no Content-Type is octet-stream (RFC 9110, 8.3)
    assert word_error_rate(TRANSCRIPTS[NAME], reply["transcript"]) <= 0.25, reply["transcript"]


@pytest.mark.parametrize(
    ("accept", "status", "content_type"),
    [
        ("text/plain", 200, "text/plain"),
        ("application/json;q=0.5, text/*", 200, "text/plain"),
        ("*/*", 200, "application/json"),
        ("audio/wav", 406, "application/json"),  # was a JSON transcript, whatever was asked
    ],
)
async def test_stt_answers_the_form_its_accept_prefers_or_406(
    edge: Edge, accept: str, status: int, content_type: str
):
    headers = {**edge.headers, "Content-Type": "audio/wav", "Accept": accept}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{edge.server.url}/v1/stt", data=(SPEECH_DIR / NAME).read_bytes(), headers=headers
        ) as resp:
            body = await resp.text()
            assert (resp.status, resp.content_type) == (status, content_type), body
            assert "Server-Timing" in resp.headers or status != 200
    if content_type == "text/plain":
        assert body.endswith("\n") and body.count("\n") == 1, body  # the transcript, a line
        assert word_error_rate(TRANSCRIPTS[NAME], body.strip()) <= 0.125, body
    elif status == 406:
        assert '"NOT_ACCEPTABLE"' in body and "text/plain" in body, body


@pytest.mark.parametrize(
    ("query", "reason", "field"),
    [
        ("?language=xx", "INVALID_CONFIG", "language"),
        ("?encoding=pcm_s16le&sample_rate=7", "UNSUPPORTED_SAMPLE_RATE", "sample_rate"),
        # Checked before the body is read: a whole body of 2-byte samples read as 10-byte
        # frames was MISALIGNED_AUDIO, not a word about the channels (the contract's reason
        # for a channel count is UNSUPPORTED_SAMPLE_RATE).
        ("?encoding=pcm_s16le&sample_rate=16000&channels=5", "UNSUPPORTED_SAMPLE_RATE", "channels"),
        # An encoding the contract does not carry, as the WebSocket's config has it.
        ("?encoding=opus&sample_rate=16000", "UNSUPPORTED_ENCODING", "encoding"),
        # Given twice, the first won ("sample_rate=8000&sample_rate=16000" with 16 kHz audio:
        # a wrong transcript, silently).
        ("?encoding=pcm_s16le&sample_rate=8000&sample_rate=16000", "INVALID_CONFIG", "sample_rate"),
    ],
)
async def test_config_errors_name_the_query_parameters(edge: Edge, query, reason, field):
    pcm, _ = read_wav(SPEECH_DIR / NAME)
    media = "audio/wav" if query == "?language=xx" else "application/octet-stream"
    # A raw body that ends inside a 5-channel frame (two 16-bit samples), read whole before
    # the stream opens.
    body = (SPEECH_DIR / NAME).read_bytes() if media == "audio/wav" else pcm.tobytes()[:4]
    status, reply = await post(edge, body, media, query)
    error = reply["error"]
    assert (status, error["reason"]) == (400, reason), reply
    assert [v["field"] for v in error["fieldViolations"]] == [field], error
    assert "config." not in error["message"], error


def _basic_mulaw() -> bytes:
    pcm, _ = read_wav(SPEECH_DIR / NAME)
    return encode(int16_to_float32(pcm[::2]), Encoding.MULAW)


def _file(kind: str) -> tuple[bytes, str]:
    if kind == "wav":
        return (SPEECH_DIR / NAME).read_bytes(), "audio/wav"  # PCM16, 16 kHz, one channel
    if kind == "basic":
        return _basic_mulaw(), "audio/basic"
    fmt, subtype, media = {
        "flac": ("FLAC", "PCM_16", "audio/flac"),
        "mp3": ("MP3", "MPEG_LAYER_III", "audio/mpeg"),
        "wav24": ("WAV", "PCM_24", "audio/wav"),
    }[kind]
    return encoded(fmt, subtype), media


@pytest.mark.parametrize(
    ("kind", "query", "fields", "said"),
    [
        # The WAV path the contract carries as it is, and the decoded ones: a query that says
        # another format than the file's header was silently ignored (the file's won).
        ("wav", "?sample_rate=8000", ["sample_rate"], "the WAV header says 16000 Hz"),
        ("wav", "?encoding=mulaw&channels=2", ["encoding", "channels"], "says pcm_s16le"),
        ("flac", "?sample_rate=48000", ["sample_rate"], "the file's header says 16000 Hz"),
        ("flac", "?channels=2", ["channels"], "says 1"),
        ("wav24", "?encoding=pcm_s16le", ["encoding"], "does not carry"),
        ("mp3", "?encoding=pcm_s16le", ["encoding"], "does not carry"),
        ("basic", "?sample_rate=16000", ["sample_rate"], "audio/basic (8 kHz mu-law"),
        ("basic", "?encoding=alaw", ["encoding"], "says mulaw"),
    ],
)
async def test_a_query_that_contradicts_the_file_is_refused(edge: Edge, kind, query, fields, said):
    body, media = _file(kind)
    status, reply = await post(edge, body, media, query)
    error = reply["error"]
    assert (status, error["reason"]) == (400, "INVALID_CONFIG"), reply
    assert [v["field"] for v in error["fieldViolations"]] == fields, error
    assert said in error["message"], error


@pytest.mark.parametrize(
    ("kind", "query"),
    [
        ("wav", "?encoding=linear16&sample_rate=16000&channels=1"),
        ("flac", "?encoding=pcm_s16le&sample_rate=16000&channels=1"),
        ("mp3", "?sample_rate=16000"),
        ("basic", "?encoding=mulaw&sample_rate=8000"),
    ],
)
async def test_a_query_that_agrees_with_the_file_is_taken(edge: Edge, kind, query):
    body, media = _file(kind)
    status, reply = await post(edge, body, media, query)
    assert status == 200, reply
    assert len(reply["transcript"].split()) >= 4, reply


async def test_the_body_streams_into_the_model_without_being_held_whole(edge: Edge, edge_adapter):
    # A 17 s upload, sent slowly in chunks: the adapter has results before the body ends.
    pcm, rate = read_wav(SPEECH_DIR / NAME)
    long = np.tile(pcm, 6).astype(np.int16)
    data = long.tobytes()

    async def slow():
        for pos in range(0, len(data), 64_000):
            yield data[pos : pos + 64_000]

    headers = {**edge.headers, "Content-Type": "application/octet-stream"}
    async with aiohttp.ClientSession() as http:
        url = f"{edge.server.url}/v1/stt?encoding=pcm_s16le&sample_rate={rate}"
        async with http.post(url, data=slow(), headers=headers) as resp:
            body = await resp.json()
    assert resp.status == 200, body
    # The file six times over has no pause long enough to end an utterance: one 17 s utterance,
    # over which pocketsphinx's live cepstral mean drifts from its prior toward this voice's
    # and costs a few words (3 of 48 measured). Each model sequence starts from the same prior,
    # so the same audio sent straight to the adapter must read the same, word for word: any
    # byte the edge lost, reordered or repeated would show.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{edge_adapter.port}") as channel:
        direct = await transcribe(channel, data, PCM16_16K, model="stt_pocketsphinx")
    assert direct.code == grpc.StatusCode.OK, direct.details
    assert body["transcript"] == transcript(direct)
    reference = " ".join([TRANSCRIPTS[NAME]] * 6)
    assert word_error_rate(reference, body["transcript"]) <= 0.25, body["transcript"]


def _sound(pcm: np.ndarray, rate: int, fmt: str, subtype: str) -> bytes:
    out = io.BytesIO()
    soundfile.write(out, pcm, rate, format=fmt, subtype=subtype)
    return out.getvalue()


def _speech() -> tuple[np.ndarray, int]:
    pcm, rate = read_wav(SPEECH_DIR / NAME)
    return pcm, rate


def _heard(body: dict) -> None:
    assert word_error_rate(TRANSCRIPTS[NAME], body.get("transcript", "")) <= 0.125, body


@pytest.mark.parametrize(
    ("fmt", "subtype", "media"),
    [
        ("WAV", "FLOAT", "audio/wav"),
        ("WAV", "DOUBLE", "audio/wav"),
        ("AIFF", "FLOAT", "audio/flac"),
    ],
)
async def test_float_audio_through_libsndfile_is_heard_not_silence(edge, fmt, subtype, media):
    # libsndfile does not scale float samples to integers unless told: read as int16, every
    # sample was -1, 0 or 1, and the upload got 200 with no transcript. (32-bit float WAV goes
    # through as PCM_F32LE; 64-bit and float AIFF go to libsndfile.)
    pcm, rate = _speech()
    status, body = await post(edge, _sound(int16_to_float32(pcm), rate, fmt, subtype), media)
    assert status == 200, body
    _heard(body)


async def test_float_audio_with_nan_through_libsndfile_is_refused(edge):
    pcm, rate = _speech()
    audio = int16_to_float32(pcm).astype(np.float64)
    audio[1000] = np.nan
    status, body = await post(edge, _sound(audio, rate, "WAV", "DOUBLE"), "audio/wav")
    assert (status, body["error"]["reason"]) == (400, "INVALID_AUDIO"), body


async def test_float_wav_with_nan_is_refused_as_the_files_fault(edge):
    # A 32-bit float WAV goes through as PCM_F32LE; the adapter's refusal of its NaN said
    # "16-bit PCM declared as PCM_F32LE reads as such values", wrong for a file whose header
    # says float.
    pcm, rate = _speech()
    audio = int16_to_float32(pcm)
    audio[1000] = np.nan
    status, body = await post(edge, _sound(audio, rate, "WAV", "FLOAT"), "audio/wav")
    assert (status, body["error"]["reason"]) == (400, "INVALID_AUDIO"), body
    assert "WAV" in body["error"]["message"], body
    assert "declared" not in body["error"]["message"], body


async def _post_in_chunks(edge: Edge, data: bytes, sizes: list[int], media: str):
    """The body in pieces of ``sizes`` (then the rest), each on the wire before the next."""

    async def pieces():
        pos = 0
        for size in sizes:
            yield data[pos : pos + size]
            pos += size
            await asyncio.sleep(0.05)
        yield data[pos:]

    headers = {**edge.headers, "Content-Type": media}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{edge.server.url}/v1/stt", data=pieces(), headers=headers) as resp:
            return resp.status, await resp.json()


@pytest.mark.parametrize("sizes", [[100, 4096], [101, 4095], [30, 30]])
async def test_other_wav_formats_split_anywhere_by_the_network_are_heard(edge, sizes):
    # The first chunk of a WAV that goes to libsndfile was passed on twice (the header
    # reader's buffer already held it): audio corrupted depending on how TCP split the body.
    pcm, rate = _speech()
    status, body = await _post_in_chunks(
        edge, _sound(pcm, rate, "WAV", "PCM_24"), sizes, "audio/wav"
    )
    assert status == 200, body
    _heard(body)


def _with_trailing_list(wav: bytes) -> bytes:
    """The WAV with a LIST chunk after its data (as editors write tags), RIFF size updated."""
    info = b"INFOISFT" + struct.pack("<I", 14) + b"voxwire tests\x00"
    chunk = b"LIST" + struct.pack("<I", len(info)) + info
    out = bytearray(wav + chunk)
    out[4:8] = struct.pack("<I", len(out) - 8)
    return bytes(out)


@pytest.mark.parametrize("channels", [1, 2])
async def test_chunks_after_the_wav_data_are_not_played_as_audio(edge, channels):
    # Everything after the data header was read as samples: a stereo file with a 26-byte LIST
    # after its data was refused (an incomplete frame), a mono one played the tags as noise.
    pcm, rate = _speech()
    if channels == 2:
        pcm = np.stack([pcm, pcm], axis=1)
    wav = _with_trailing_list(_sound(pcm, rate, "WAV", "PCM_16"))
    status, body = await post(edge, wav, "audio/wav")
    assert status == 200, body
    _heard(body)
    assert not body.get("truncated"), body


@pytest.mark.parametrize(
    ("fmt", "subtype", "media", "keep"),
    [
        # Cut at a frame boundary, and inside a sample: the half frame at the cut was a 400
        # MISALIGNED_AUDIO, as if the client had sent raw samples out of step.
        ("WAV", "PCM_16", "audio/wav", lambda n: 44 + (n - 44) // 2 // 2 * 2),
        ("WAV", "PCM_16", "audio/wav", lambda n: 44 + (n - 44) // 2 // 2 * 2 + 1),
        # WAV the contract does not carry goes to libsndfile, which shortens its frame count
        # to what arrived without a word: the cut went unreported (truncated false).
        ("WAV", "PCM_24", "audio/wav", lambda n: n // 2),
        # libFLAC loses sync in the cut frame at the body's end: that was a 400 INVALID_AUDIO
        # ("the audio is corrupt"), the audio decoded before it thrown away.
        ("FLAC", "PCM_16", "audio/flac", lambda n: n * 3 // 4),
    ],
    ids=["wav16-frame", "wav16-inside-a-sample", "wav24", "flac"],
)
async def test_an_upload_cut_short_is_transcribed_and_reported_truncated(
    edge, fmt, subtype, media, keep
):
    pcm, rate = _speech()
    whole = _sound(pcm, rate, fmt, subtype)
    status, body = await post(edge, whole[: keep(len(whole))], media)
    assert status == 200, body
    assert body.get("truncated") is True, body
    assert 0 < body["audioMs"] < 0.9 * len(pcm) * 1000 / rate, body
    assert body["transcript"], body
    status, answer = await post(edge, whole, media)
    assert status == 200 and not answer.get("truncated"), answer


async def test_a_flac_corrupt_inside_is_still_refused(edge):
    # Only a failure at the body's end is a cut: zeroed bytes in the middle of the stream
    # (the decoder fails with most of the body unread) stay a 400.
    pcm, rate = _speech()
    flac = bytearray(_sound(pcm, rate, "FLAC", "PCM_16"))
    middle = len(flac) // 3
    flac[middle : middle + 400] = bytes(400)
    status, body = await post(edge, bytes(flac), "audio/flac")
    assert status == 400 and body["error"]["reason"] == "INVALID_AUDIO", body
    assert "corrupt" in body["error"]["message"], body


@pytest.mark.parametrize(
    ("channels", "rate_out", "fmt"),
    [(3, 16000, "WAV"), (1, 96000, "WAV"), (1, 16000, "RF64")],
)
async def test_wav_the_contract_does_not_carry_as_it_is_is_decoded(edge, channels, rate_out, fmt):
    # 16-bit WAV of three channels or at 96 kHz was refused (INVALID_AUDIO, or
    # UNSUPPORTED_SAMPLE_RATE naming a config field the client never set) while the same
    # audio as FLAC was downmixed and resampled; RF64 was "not a WAV file".
    pcm, rate = _speech()
    audio = int16_to_float32(pcm)
    if rate_out != rate:
        audio = np.interp(
            np.arange(len(audio) * rate_out // rate) * rate / rate_out, np.arange(len(audio)), audio
        ).astype(np.float32)
    if channels > 1:
        audio = np.stack([audio] * channels, axis=1)
    status, body = await post(edge, _sound(audio, rate_out, fmt, "PCM_16"), "audio/wav")
    assert status == 200, body
    _heard(body)


def _wav_at(rate: int, samples: np.ndarray) -> bytes:
    """A 16-bit mono WAV whose header says ``rate`` (any value, as a hostile header can)."""
    data = samples.astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + len(data))
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )


@pytest.mark.parametrize("rate", [1, 3999])
async def test_a_header_declaring_a_rate_below_4_khz_is_refused(edge, rate):
    # A WAV header saying 1 Hz made the gateway resample 3,200 bytes up to 8 kHz: 25.6 MB of
    # audio for the model, 250-400 MiB of the gateway's memory for one upload (the edge
    # fuzzer's huge_header case; 471 MiB peak in 3,000 of its uploads).
    samples = np.zeros(1600, dtype=np.int16)
    status, body = await post(edge, _wav_at(rate, samples), "audio/wav")
    assert (status, body["error"]["reason"]) == (400, "UNSUPPORTED_SAMPLE_RATE"), body
    assert f"sample rate is {rate} Hz" in body["error"]["message"], body
    flac = _sound(samples, 4000, "FLAC", "PCM_16")
    flac = flac.replace(struct.pack(">I", 4000 << 12)[:3], struct.pack(">I", rate << 12)[:3], 1)
    status, body = await post(edge, flac, "audio/flac")
    assert (status, body["error"]["reason"]) == (400, "UNSUPPORTED_SAMPLE_RATE"), body


async def test_a_wav_at_4_khz_is_resampled_and_heard(edge):
    pcm, rate = _speech()
    audio = int16_to_float32(pcm)[:: rate // 4000]
    status, body = await post(edge, _wav_at(4000, float32_to_int16(audio)), "audio/wav")
    assert status == 200, body
    assert abs(body["audioMs"] - len(audio) / 4) < 1, body


def _big_mp3(repeats: int) -> tuple[bytes, float]:
    """The speech ``repeats`` times as an MP3 (160 kbit/s), and its length in ms."""
    pcm, rate = _speech()
    audio = np.tile(int16_to_float32(pcm), repeats)
    out = io.BytesIO()
    soundfile.write(
        out,
        audio,
        rate,
        format="MP3",
        subtype="MPEG_LAYER_III",
        bitrate_mode="CONSTANT",
        compression_level=0.0,
    )
    return out.getvalue(), len(audio) * 1000 / rate


async def test_an_upload_whose_open_waits_for_its_body_holds_up_no_other(edge):
    # libsndfile opens an MP3 by reading its end, and soundfile holds one lock for every
    # open of the process: the gateway's decoder waited for the end inside that lock, so
    # every other compressed upload waited behind it; and past 2 MiB the end never came (the
    # pipe stopped taking the body at its memory bound): the upload hung for good, its
    # decoder with it (four such and every compressed upload was 503 OVERLOADED).
    mp3, ms = _big_mp3(70)
    assert len(mp3) > 2 * 2**20  # past the memory the pipe keeps while opening
    release = asyncio.Event()

    async def held_body():
        yield mp3[: len(mp3) // 2]
        await release.wait()
        yield mp3[len(mp3) // 2 :]

    headers = {**edge.headers, "Content-Type": "audio/mpeg", "Content-Length": str(len(mp3))}
    async with aiohttp.ClientSession() as http:

        async def post_mp3() -> tuple[int, dict]:
            url = f"{edge.server.url}/v1/stt?model=bench_stt"
            async with http.post(url, data=held_body(), headers=headers) as resp:
                return resp.status, await resp.json()

        held = asyncio.create_task(post_mp3())
        try:
            await asyncio.sleep(0.5)  # half of it in: its open cannot read the end yet
            pcm, rate = _speech()
            flac = _sound(pcm, rate, "FLAC", "PCM_16")
            status, body = await asyncio.wait_for(post(edge, flac, "audio/flac"), 20)
            assert status == 200, body
            _heard(body)
            assert not held.done()
            release.set()
            status, body = await asyncio.wait_for(held, 60)
        finally:
            held.cancel()
    assert status == 200, body
    assert abs(body["audioMs"] - ms) < 200, (body["audioMs"], ms)


async def test_an_mp3_that_fits_in_memory_is_heard_whatever_the_network_split(edge):
    # Under _OPEN_MEMORY the open is tried on each doubling of the body: the same audio.
    mp3, ms = _big_mp3(4)
    status, body = await _post_in_chunks(edge, mp3, [100, 5000, 20_000], "audio/mpeg")
    assert status == 200, body
    assert abs(body["audioMs"] - ms) < 200, (body["audioMs"], ms)
    assert word_error_rate(" ".join([TRANSCRIPTS[NAME]] * 4), body["transcript"]) <= 0.25


async def _active_uploads(edge: Edge) -> float:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{edge.server.url}/metrics") as resp:
            text = await resp.text()
    for line in text.splitlines():
        if line.startswith('voxwire_gateway_sessions_active{kind="http_stt"}'):
            return float(line.split()[-1])
    return 0.0


async def test_an_upload_its_client_abandons_stops_at_once(edge):
    # The answer comes at the end: a client that sent its file and left before the answer
    # was noticed only when the model had heard all of it (a 19 MB FLAC abandoned after
    # 4 s kept stt_pocketsphinx busy, and the key's concurrency taken, 100 s more).
    pcm, rate = _speech()
    flac = _sound(np.tile(pcm, 60), rate, "FLAC", "PCM_16")  # 2 minutes, under the 4 MiB limit
    step = 256 * 1024
    sent = asyncio.Event()

    async def body():
        for pos in range(0, len(flac), step):
            yield flac[pos : pos + step]
        sent.set()  # all of it: the gateway takes it faster than the model hears it

    headers = {**edge.headers, "Content-Type": "audio/flac", "Content-Length": str(len(flac))}
    before = await _active_uploads(edge)
    async with aiohttp.ClientSession() as http:
        post = asyncio.create_task(
            http.post(
                f"{edge.server.url}/v1/stt?model=stt_pocketsphinx", data=body(), headers=headers
            )
        )
        await asyncio.wait_for(sent.wait(), 30)
        await asyncio.sleep(0.5)
        assert await _active_uploads(edge) == before + 1
        post.cancel()  # the client gives up: its connection closes
        await asyncio.gather(post, return_exceptions=True)
    left = time.monotonic()
    while (active := await _active_uploads(edge)) > before:
        assert time.monotonic() - left < 5, f"{active} uploads still running without a client"
        await asyncio.sleep(0.1)


async def test_upload_errors_name_what_the_client_sent(edge):
    status, body = await post(edge, b"not audio at all" * 100, "audio/flac")
    assert (status, body["error"]["reason"]) == (400, "INVALID_AUDIO"), body
    assert "object at 0x" not in body["error"]["message"], body
    status, body = await post(
        edge, b"\x00" * 100, "application/octet-stream", "?encoding=pcm_s16le"
    )
    assert (status, body["error"]["reason"]) == (400, "INVALID_CONFIG"), body
    fields = [v["field"] for v in body["error"]["fieldViolations"]]
    assert fields == ["sample_rate"], body


async def test_an_au_file_sent_as_audio_basic_is_decoded_not_heard_as_noise(edge):
    # .au files are served as audio/basic; their 24-byte header was decoded as mu-law.
    pcm, rate = _speech()
    au = _sound(pcm[::2].copy(), rate // 2, "AU", "ULAW")
    assert au[:4] == b".snd"
    status, body = await post(edge, au, "audio/basic")
    assert status == 200, body
    # Exactly the samples: the header read as mu-law added its 24 or more bytes (3 ms).
    assert abs(body["audioMs"] - len(pcm[::2]) * 1000 / (rate // 2)) < 1, body
    status, raw = await post(edge, au[struct.unpack(">I", au[4:8])[0] :], "audio/basic")
    assert status == 200 and raw["transcript"] == body["transcript"], (raw, body)


@pytest.mark.parametrize(
    "data_size",
    [0x8000_0000, 0x7FFF_0000, 0x7FFF_FFDB],
    ids=["arecord-2GiB", "sndio-0x7fff0000", "2GiB-less-header"],
)
async def test_a_recorders_streaming_header_is_an_unknown_length(edge, data_size):
    # A recorder writing a WAV to a pipe cannot patch its header at the end, and puts the
    # largest length a WAV can hold in it (arecord: 2 GiB; sndio: 0x7fff0000). Read as a real
    # length, 16 kHz mono declared 18.6 h: `arecord ... | curl -T - .../v1/stt` was refused
    # 413 BODY_TOO_LARGE (over max_upload_audio_seconds) before any audio was heard.
    pcm, rate = _speech()
    wav = bytearray(_sound(pcm, rate, "WAV", "PCM_16"))
    assert wav[36:40] == b"data"
    wav[4:8] = struct.pack("<I", min(data_size + 36, 0xFFFF_FFFF))
    wav[40:44] = struct.pack("<I", data_size)
    status, body = await post(edge, bytes(wav), "audio/wav")
    assert status == 200, body
    _heard(body)
    assert not body.get("truncated"), body  # a stream that ends is not a file cut short
