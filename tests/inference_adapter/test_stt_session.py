"""The sans-I/O STT core, driven by events alone (no network, no Triton)."""

from __future__ import annotations

import numpy as np
import pytest

from inference_adapter.config import Limits
from inference_adapter.stt.config import resolve
from inference_adapter.stt.session import State, TranscriptionSession
from inference_adapter.triton.catalog import ModelInfo, ModelKind
from inference_adapter.triton.tensors import ModelResponse
from voxwire import errors
from voxwire.v1 import audio_pb2, stream_pb2, transcription_pb2

MODEL = ModelInfo(
    name="stt_test",
    kind=ModelKind.STT,
    sample_rate_hz=16000,
    languages=("en-US",),
    features=frozenset({"interim_results", "word_timestamps", "endpointing", "vocabulary"}),
    voices=(),
    benchmark=False,
    batched=True,
    sequence_slots=8,
)
Req = transcription_pb2.StreamingTranscribeRequest


def config(encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, rate=16000, **kw):
    return transcription_pb2.TranscriptionConfig(
        model=MODEL.name,
        audio_format=audio_pb2.AudioFormat(encoding=encoding, sample_rate_hz=rate),
        **kw,
    )


def session(**kw) -> TranscriptionSession:
    resolved = resolve(config(**kw), {MODEL.name: MODEL}, Limits(), request_id="r")
    return TranscriptionSession(resolved, Limits(max_chunk_bytes=8000), session_id="s")


def answer(*events, final=True) -> ModelResponse:
    return ModelResponse(events=tuple(events), compute_us=50, audio=None, final=final)


def test_start_sends_config_and_ready_becomes_started():
    s = session(interim_results=True)
    start = s.start()
    assert start.start and start.control["config"]["interim_results"] is True
    (started,) = s.model_response(answer({"type": "ready", "vocabulary": []}))
    assert started.started.model == MODEL.name and started.started.session_id == "s"


def test_audio_is_resampled_to_the_model_rate():
    s = session(encoding=audio_pb2.AUDIO_ENCODING_MULAW, rate=8000)
    s.start()
    total = 0
    for _ in range(10):
        actions = s.receive(Req(audio=b"\xff" * 800))  # 100 ms of mu-law silence
        total += sum(r.audio.size for r in actions.to_model)
    end = s.half_close().to_model[0]
    total += end.audio.size
    assert end.end and abs(total - 16000) <= 2  # 1 s at 8 kHz becomes 1 s at 16 kHz
    assert s.audio_ms == 1000


@pytest.mark.parametrize(
    ("data", "error"),
    [(b"\x00" * 3, errors.MisalignedAudio), (b"\x00" * 8002, errors.ChunkTooLarge)],
)
def test_bad_audio_is_a_specific_error(data, error):
    s = session()
    with pytest.raises(error):
        s.receive(Req(audio=data))


def test_second_config_and_empty_message():
    s = session()
    with pytest.raises(errors.ConfigAlreadySet):
        s.receive(Req(config=config()))
    with pytest.raises(errors.InvalidMessage):
        s.receive(Req())


def test_finalize_ack_echoes_id_and_audio_offset():
    s = session()
    s.start()
    s.model_response(answer({"type": "ready"}))
    s.receive(Req(audio=b"\x00\x00" * 3200))  # 200 ms
    (req,) = s.receive(Req(finalize=transcription_pb2.Finalize(finalize_id="mine"))).to_model
    internal = req.control["finalize"]
    s.model_response(answer())  # the audio request
    out = s.model_response(
        answer(
            {"type": "final", "utterance": 1, "text": "hi", "start_ms": 0, "end_ms": 190},
            {"type": "finalize_ack", "id": internal},
        )
    )
    assert out[0].result.is_final and out[0].result.HasField("timings")
    assert out[1].finalize_ack.finalize_id == "mine" and out[1].finalize_ack.audio_ms == 200


def test_invalid_update_is_rejected_at_once_with_reason():
    s = session()
    update = transcription_pb2.UpdateTranscriptionConfig(
        update_id="u1", endpointing=transcription_pb2.EndpointingConfig(vad_aggressiveness=9)
    )
    actions = s.receive(Req(update_config=update))
    assert actions.to_model == []
    (ack,) = actions.to_client
    assert not ack.update_config_ack.accepted
    assert ack.update_config_ack.error.field_violations[0].field.endswith("vad_aggressiveness")


def test_close_then_end_answer_gives_summary_and_done():
    s = session()
    s.start()
    s.model_response(answer({"type": "ready"}))
    s.receive(Req(close=transcription_pb2.CloseStream()))
    assert s.state is State.CLOSING
    with pytest.raises(errors.InvalidMessage):
        s.receive(Req(audio=b"\x00\x00"))
    out = s.model_response(answer())
    assert s.done and out[-1].HasField("summary")


def test_model_error_event_raises_its_reason():
    s = session()
    s.start()
    with pytest.raises(errors.ModelError):
        s.model_response(answer({"type": "error", "reason": "MODEL_ERROR", "message": "boom"}))


def test_times_never_exceed_received_audio():
    s = session(word_timestamps=True)
    s.start()
    s.model_response(answer({"type": "ready"}))
    s.receive(Req(audio=np.zeros(1600, dtype="<i2").tobytes()))
    (final,) = s.model_response(
        answer(
            {
                "type": "final",
                "utterance": 1,
                "text": "x",
                "start_ms": 0,
                "end_ms": 5000,
                "words": [{"word": "x", "start_ms": 10, "end_ms": 9000}],
            }
        )
    )
    assert final.result.end_ms == 100 and final.result.words[0].end_ms == 100


def test_finalize_carries_the_resampler_tail():
    s = session(encoding=audio_pb2.AUDIO_ENCODING_MULAW, rate=8000)
    s.start()
    sent = 0
    for _ in range(3):
        sent += sum(r.audio.size for r in s.receive(Req(audio=b"\xff" * 800)).to_model)
    assert sent < 4800  # soxr holds some back...
    (fin,) = s.receive(Req(finalize=transcription_pb2.Finalize())).to_model
    assert abs(sent + fin.audio.size - 4800) <= 2  # ...and the finalize request carries it


def test_keepalive_touches_the_triton_sequence_before_it_idles_out():
    now = [0.0]
    resolved = resolve(config(), {MODEL.name: MODEL}, Limits(), request_id="r")
    s = TranscriptionSession(resolved, Limits(), session_id="s", clock=lambda: now[0])
    s.start()
    keep = Req(keep_alive=stream_pb2.KeepAlive())
    now[0] = 0.2
    assert s.receive(keep).to_model == []  # MODEL's sequence idle is 1 s: a quarter is 0.25 s
    now[0] = 0.3
    (touch,) = s.receive(keep).to_model
    assert touch.audio.size == 0 and touch.control is None and not touch.end
