"""The sans-I/O STT core, driven by events alone (no network, no Triton)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from inference_adapter.config import Limits
from inference_adapter.stt.config import resolve
from inference_adapter.stt.session import State, TranscriptionSession
from inference_adapter.triton.catalog import ModelInfo, ModelKind, ModelLimits
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
    ("encoding", "data", "error"),
    [
        (audio_pb2.AUDIO_ENCODING_PCM_S16LE, b"\x00" * 3, errors.MisalignedAudio),
        (audio_pb2.AUDIO_ENCODING_PCM_S16LE, b"\x00" * 8002, errors.ChunkTooLarge),
        (audio_pb2.AUDIO_ENCODING_PCM_F32LE, b"\x00" * 6, errors.MisalignedAudio),
        # Well-formed float32 whose samples are not numbers: INVALID_AUDIO, not misaligned.
        (
            audio_pb2.AUDIO_ENCODING_PCM_F32LE,
            np.array([0.1, np.nan], "<f4").tobytes(),
            errors.InvalidAudio,
        ),
        (
            audio_pb2.AUDIO_ENCODING_PCM_F32LE,
            np.array([np.inf, 0], "<f4").tobytes(),
            errors.InvalidAudio,
        ),
    ],
)
def test_bad_audio_is_a_specific_error(encoding, data, error):
    s = session(encoding=encoding)
    with pytest.raises(error) as raised:
        s.receive(Req(audio=data))
    assert type(raised.value) is error


def test_vocabulary_is_checked_against_the_models_own_limits():
    limited = replace(
        MODEL,
        limits=ModelLimits(max_vocabulary_entries=2, max_phrase_chars=5, max_vocabulary_boost=20),
    )
    entries = [
        transcription_pb2.VocabularyEntry(phrase="ok", boost=20),
        transcription_pb2.VocabularyEntry(phrase="toolong", boost=50),
        transcription_pb2.VocabularyEntry(phrase="fine", boost=-1),
    ]
    cfg = config(vocabulary=entries)
    with pytest.raises(errors.InvalidConfig) as raised:
        resolve(cfg, {MODEL.name: limited}, Limits(), request_id="r")
    fields = {v.field for v in raised.value.violations}
    assert fields == {
        "config.vocabulary",  # 3 entries, the model takes 2
        "config.vocabulary[1].phrase",
        "config.vocabulary[1].boost",  # 50 > 20: the model's range, not another
        "config.vocabulary[2].boost",
    }


def test_an_unsent_end_leaves_the_sequence_open_for_a_cancel():
    # The stream ends while the client's END could not be sent: the session must not wait for
    # an answer that will never come, and the END + cancel that frees the slot is still due.
    s = session()
    s.start()
    end = s.half_close().to_model
    s.unsent(end)
    assert s.state is State.STREAMING and s.inflight == 1  # only the START is awaited
    cancel = s.cancel()
    assert cancel is not None and cancel.end and cancel.control == {"cancel": True}
    assert s.cancel() is None  # once
    s.model_response(answer({"type": "ready"}))
    assert not s.done
    assert s.model_response(answer({"type": "final", "text": "dropped"})) == []
    assert s.done  # the cancel's answer ends the sequence, and nothing is sent on


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


def test_a_finalize_answered_without_its_ack_is_a_model_error():
    # Found by the session fuzzer (make fuzz): the client's finalize was never acknowledged
    # and the next finalize's ack came in its place.
    s = session()
    s.start()
    s.model_response(answer({"type": "ready"}))
    s.receive(Req(audio=b"\x00\x00" * 3200))
    s.receive(Req(finalize=transcription_pb2.Finalize(finalize_id="mine")))
    s.model_response(answer())  # the audio request
    with pytest.raises(errors.ModelError, match="without its finalize_ack"):
        s.model_response(answer())  # the finalize request, answered without its ack


def test_invalid_update_is_rejected_at_once_with_reason_but_never_before_started():
    s = session()
    s.start()
    update = transcription_pb2.UpdateTranscriptionConfig(
        update_id="u1", endpointing=transcription_pb2.EndpointingConfig(vad_aggressiveness=9)
    )
    early = s.receive(Req(update_config=update))
    assert early.to_model == [] and early.to_client == []  # held: started comes first
    started, ack = s.model_response(answer({"type": "ready"}))
    assert started.HasField("started")
    assert not ack.update_config_ack.accepted
    assert ack.update_config_ack.error.field_violations[0].field.endswith("vad_aggressiveness")
    (again,) = s.receive(Req(update_config=update)).to_client  # after started: at once
    assert again.update_config_ack.update_id == "u1"


def test_a_resumed_stream_reports_session_positions_and_continues_utterance_ids():
    s = session(stream_offset_ms=4200, first_utterance_index=3, word_timestamps=True)
    s.start()
    s.model_response(answer({"type": "ready"}))
    for _ in range(4):
        s.receive(Req(audio=bytes(8000)))  # 4 x 250 ms
    (final,) = s.model_response(
        answer(
            {
                "type": "final",
                "utterance": 0,
                "text": "hi",
                "start_ms": 100,
                "end_ms": 900,
                "words": [{"word": "hi", "start_ms": 100, "end_ms": 5000}],
            }
        )
    )
    result = final.result
    assert (result.utterance_id, result.start_ms, result.end_ms) == ("u3", 4300, 5100)
    assert (result.words[0].start_ms, result.words[0].end_ms) == (4300, 5100)  # clamped
    s.receive(Req(finalize=transcription_pb2.Finalize(finalize_id="f")))
    (ack,) = s.model_response(answer({"type": "finalize_ack", "id": "f1"}))
    assert ack.finalize_ack.audio_ms == 5200


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
    # The resampler holds back only its filter's reach, 12 ms (193 frames at 16 kHz; soxr's
    # own stream held up to 115 ms, so the model heard the end of speech that much later)...
    assert 4800 - 200 <= sent < 4800
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


def test_a_finalize_or_update_with_no_id_is_acknowledged_with_no_id():
    # The ids are echoed as the client gave them (the contract's Finalize and
    # UpdateTranscriptionConfig). The adapter filled an empty one with its own "f1": the
    # client's own "f1", sent next, was taken as acknowledged by the first ack, 1 s early.
    s = session()
    s.start()
    s.model_response(answer({"type": "ready"}))
    s.receive(Req(audio=b"\x00\x00" * 3200))
    internal = []
    for given in ("", "f1"):
        sent = s.receive(Req(finalize=transcription_pb2.Finalize(finalize_id=given))).to_model
        internal.append(sent[-1].control["finalize"])
    s.model_response(answer())  # the audio request
    acks = [s.model_response(answer({"type": "finalize_ack", "id": i}))[0] for i in internal]
    assert [a.finalize_ack.finalize_id for a in acks] == ["", "f1"], acks
    bad = transcription_pb2.UpdateTranscriptionConfig(
        endpointing=transcription_pb2.EndpointingConfig(vad_aggressiveness=9)
    )
    (refused,) = s.receive(Req(update_config=bad)).to_client  # refused at once
    assert refused.update_config_ack.update_id == "", refused


@pytest.mark.parametrize(
    ("field", "value"),
    [("stream_offset_ms", 2**32 - 1), ("first_utterance_index", 2**32 - 1)],
)
def test_a_starting_point_with_no_room_for_the_stream_is_refused_at_the_config(field, value):
    # 2**32 - 1 was INTERNAL (ValueError) at the first result, after the audio was taken.
    with pytest.raises(errors.InvalidConfig) as refused:
        resolve(config(**{field: value}), {MODEL.name: MODEL}, Limits(), request_id="r")
    assert [v.field for v in refused.value.violations] == [f"config.{field}"]
    resolve(config(**{field: 1_000_000}), {MODEL.name: MODEL}, Limits(), request_id="r")


def test_compute_is_at_most_its_requests_window_so_the_stages_fit_the_wall_time():
    # A model's clock may count more compute than the adapter saw the request take (it began
    # while the answer before was in transit): triton got 0 and triton + compute + encode ran
    # 13 % over the wall time on stt_pocketsphinx.
    now = [0.0]
    resolved = resolve(config(), {MODEL.name: MODEL}, Limits(), request_id="r")
    s = TranscriptionSession(resolved, Limits(), session_id="s", clock=lambda: now[0])
    s.start()
    now[0] = 0.010
    s.model_response(
        ModelResponse(events=({"type": "ready"},), compute_us=4000, audio=None, final=True)
    )
    s.receive(Req(audio=b"\x00\x00" * 1600))  # sent at 10 ms
    now[0] = 0.030  # answered 20 ms later, the model saying it computed for 35 ms
    s.model_response(ModelResponse(events=(), compute_us=35_000, audio=None, final=True))
    stages = s.timings.stages_us
    assert stages["compute"] == 4000 + 20_000, stages
    assert stages["triton"] == 6000, stages  # the START's 10 ms less its 4 ms of compute
    assert stages["triton"] + stages["compute"] <= 30_000
