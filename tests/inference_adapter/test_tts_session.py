"""The sans-I/O TTS core, driven by events alone (no network, no Triton): h11-style tests."""

from __future__ import annotations

import numpy as np
import pytest

from inference_adapter.config import Limits
from inference_adapter.triton.catalog import ModelInfo, ModelKind
from inference_adapter.triton.tensors import ModelResponse
from inference_adapter.tts.config import resolve
from inference_adapter.tts.session import SynthesisSession
from inference_adapter.tts.text import split_ready
from voxwire.v1 import audio_pb2, errors_pb2, synthesis_pb2

MODEL = ModelInfo(
    name="tts_test",
    kind=ModelKind.TTS,
    sample_rate_hz=16000,
    languages=("en-US",),
    features=frozenset({"word_timestamps", "pronunciation", "ssml"}),
    voices=("en-us",),
    benchmark=False,
    batched=False,
    sequence_slots=0,
)
Req = synthesis_pb2.StreamingSynthesizeRequest


def new_session(**limits: int) -> SynthesisSession:
    return SynthesisSession(
        Limits(**limits), lambda cfg: resolve(cfg, {MODEL.name: MODEL}), session_id="s1"
    )


def open_msg(cid: str, rate: int = 16000) -> Req:
    return Req(
        context_id=cid,
        open=synthesis_pb2.SynthesisContextConfig(
            model=MODEL.name,
            word_timestamps=True,
            output_format=audio_pb2.AudioFormat(
                encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=rate
            ),
        ),
    )


def opened(session: SynthesisSession, cid: str, rate: int = 16000):
    actions = session.receive(open_msg(cid, rate))
    (ctx,) = actions.open
    session.opened(ctx, "r0")
    return ctx


def audio_response(n: int, *, final: bool, words=None) -> ModelResponse:
    events = ({"type": "words", "words": words},) if words else ()
    if final:
        events += ({"type": "done", "samples": n},)
    return ModelResponse(
        events=events, compute_us=100, audio=np.full(n, 1000, dtype=np.int16), final=final
    )


def reason(resp: synthesis_pb2.StreamingSynthesizeResponse) -> str:
    return errors_pb2.ErrorReason.Name(resp.error.error.reason).removeprefix("ERROR_REASON_")


def test_split_ready_cuts_sentences_and_keeps_the_rest():
    units, rest = split_ready("Hello there. How are you? I am")
    assert units == ["Hello there. ", "How are you? "]
    assert rest == "I am"
    units, rest = split_ready("word " * 200, soft_limit=100)
    assert all(len(u) <= 101 for u in units) and len(rest) <= 100


def test_sentences_become_units_one_at_a_time_in_order():
    s = new_session()
    ctx = opened(s, "a")
    actions = s.receive(Req(context_id="a", append=synthesis_pb2.AppendText(text="One. Two. Thr")))
    assert [u.text for _, u in actions.submit] == ["One. "]  # one unit in flight at a time
    actions = s.model_response(ctx.key, audio_response(1600, final=True))
    assert [r.WhichOneof("response") for r in actions.to_client] == ["audio"]
    assert [u.text for _, u in actions.submit] == ["Two. "]


def test_audio_chunks_tile_and_words_are_offset_per_unit():
    s = new_session()
    ctx = opened(s, "a")
    s.receive(Req(context_id="a", append=synthesis_pb2.AppendText(text="One. Two. ")))
    words = [{"word": "one", "start_ms": 0, "end_ms": 90}]
    first = s.model_response(ctx.key, audio_response(1600, final=True, words=words)).to_client
    second = s.model_response(ctx.key, audio_response(1600, final=True, words=words)).to_client
    chunks = [r.audio for r in first + second if r.HasField("audio")]
    assert [c.sequence_number for c in chunks] == [1, 2]
    assert chunks[1].start_ms == chunks[0].start_ms + chunks[0].duration_ms == 100
    starts = [w.start_ms for r in first + second if r.HasField("words") for w in r.words.words]
    assert starts == [0, 100]  # the second unit starts where the first unit's audio ended


def test_cancel_ack_names_last_sequence_and_nothing_follows():
    s = new_session()
    ctx = opened(s, "a")
    s.receive(Req(context_id="a", append=synthesis_pb2.AppendText(text="Hello there. ")))
    s.model_response(ctx.key, audio_response(800, final=False))
    actions = s.receive(Req(context_id="a", cancel=synthesis_pb2.Cancel()))
    (ack,) = actions.to_client
    assert ack.cancelled.last_sequence_number == 1
    assert actions.finished == [ctx]
    # The model keeps talking: the session drops it.
    assert s.model_response(ctx.key, audio_response(800, final=True)).to_client == []


def test_flush_ack_follows_the_audio_of_the_text_before_it():
    s = new_session()
    ctx = opened(s, "a", rate=8000)  # resampled: the ack must come after the resampler tail
    s.receive(Req(context_id="a", append=synthesis_pb2.AppendText(text="no sentence end")))
    actions = s.receive(Req(context_id="a", flush=synthesis_pb2.Flush(flush_id="f1")))
    assert [u.text for _, u in actions.submit] == ["no sentence end"]
    assert actions.to_client == []  # not yet: its audio has not been produced
    out = s.model_response(ctx.key, audio_response(16000, final=True)).to_client
    kinds = [r.WhichOneof("response") for r in out]
    assert kinds[-1] == "flush_ack" and "audio" in kinds
    total = sum(r.audio.duration_ms for r in out if r.HasField("audio"))
    assert total == 1000  # 1 s of audio, all of it before the ack
    assert out[-1].flush_ack.last_sequence_number == max(
        r.audio.sequence_number for r in out if r.HasField("audio")
    )


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([Req(context_id="x", append=synthesis_pb2.AppendText(text="hi"))], "CONTEXT_NOT_OPEN"),
        ([Req(context_id="x", flush=synthesis_pb2.Flush())], "UNKNOWN_CONTEXT"),
        ([Req(context_id="x", cancel=synthesis_pb2.Cancel())], "UNKNOWN_CONTEXT"),
        ([open_msg("x"), open_msg("x")], "CONTEXT_ALREADY_OPEN"),
    ],
)
def test_context_errors_name_the_context_and_the_stream_goes_on(messages, expected):
    s = new_session()
    responses = []
    for m in messages:
        actions = s.receive(m)
        for ctx in actions.open:
            responses.append(s.opened(ctx, "r0"))
        responses += actions.to_client
    err = responses[-1]
    assert err.context_id == "x" and reason(err) == expected
    # Another context still works on the same stream.
    assert opened(s, "y").context_id == "y"


def test_too_many_contexts():
    s = new_session(max_contexts_per_stream=2)
    opened(s, "a")
    opened(s, "b")
    (err,) = s.receive(open_msg("c")).to_client
    assert reason(err) == "TOO_MANY_CONTEXTS" and err.error.error.code == 8  # RESOURCE_EXHAUSTED


def test_model_error_fails_only_its_context():
    s = new_session()
    a, b = opened(s, "a"), opened(s, "b")
    s.receive(Req(context_id="a", append=synthesis_pb2.AppendText(text="Hi. ")))
    bad = ModelResponse(
        events=({"type": "error", "reason": "SSML_INVALID", "message": "bad <tag>"},),
        compute_us=0,
        audio=None,
        final=True,
    )
    out = s.model_response(a.key, bad).to_client
    assert reason(out[0]) == "SSML_INVALID" and out[0].context_id == "a"
    assert "a" not in s.contexts and "b" in s.contexts
    assert b.state.value == "open"


def test_half_close_closes_every_context_and_ends_when_done():
    s = new_session()
    ctx = opened(s, "a")
    s.receive(Req(context_id="a", append=synthesis_pb2.AppendText(text="Last words")))
    actions = s.half_close()
    assert [u.text for _, u in actions.submit] == ["Last words"] and not s.done
    out = s.model_response(ctx.key, audio_response(1600, final=True)).to_client
    assert out[-1].HasField("done") and out[-1].done.last_sequence_number == 1
    assert s.done and s.summary().summary.contexts == 1
