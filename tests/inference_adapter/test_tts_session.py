"""The sans-I/O TTS core, driven by events alone (no network, no Triton): h11-style tests."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from inference_adapter.config import Limits
from inference_adapter.triton.catalog import ModelInfo, ModelKind, ModelLimits
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


def test_resampled_audio_is_held_back_only_by_the_filter_look_ahead():
    # A model streaming 20 ms at a time, out at 8 kHz: each chunk the client gets holds all
    # but the resampler's reach (12 ms, 97 frames) of what the model made. soxr's own stream
    # gave nothing for the first chunks and held up to 115 ms back.
    s = new_session()
    ctx = opened(s, "a", rate=8000)
    s.receive(Req(context_id="a", append=synthesis_pb2.AppendText(text="no sentence end")))
    s.receive(Req(context_id="a", flush=synthesis_pb2.Flush(flush_id="f1")))
    got = 0
    for made in range(1, 11):
        out = s.model_response(ctx.key, audio_response(320, final=False)).to_client
        got += sum(len(r.audio.audio) // 2 for r in out if r.HasField("audio"))
        assert made * 160 - 100 <= got <= made * 160
    out = s.model_response(ctx.key, audio_response(0, final=True)).to_client
    got += sum(len(r.audio.audio) // 2 for r in out if r.HasField("audio"))
    assert got == 1600 and out[-1].HasField("flush_ack")


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


# -- issue 8 ----------------------------------------------------------------------------------


def response(compute_us: int, *, final: bool, events=()) -> ModelResponse:
    """A model response; the last of a unit carries `done`, as the contract says."""
    done = ({"type": "done", "samples": 160},) if final else ()
    return ModelResponse(
        events=(*events, *done),
        compute_us=compute_us,
        audio=np.full(160, 1000, dtype=np.int16),
        final=final,
    )


def test_triton_and_compute_add_up_to_the_round_trip():
    # A unit sent at 0 ms is answered by three responses (at 10, 20, 30 ms), each reporting 8 ms
    # of compute: the stages of the unit add up to its 30 ms round trip. (Before, triton was the
    # round trip minus the last response's compute only: 22 + 24 = 46 ms in 30 ms of wall time.)
    now = [0.0]
    s = SynthesisSession(
        Limits(),
        lambda cfg: resolve(cfg, {MODEL.name: MODEL}),
        session_id="s1",
        clock=lambda: now[0],
    )
    ctx = opened(s, "a")
    (submitted,) = s.receive(
        Req(context_id="a", append=synthesis_pb2.AppendText(text="Hi. "))
    ).submit
    for at_ms, final in ((10, False), (20, False), (30, True)):
        now[0] = at_ms / 1000
        s.model_response(ctx.key, response(8000, final=final))
    stages = ctx.timings.stages_us
    assert stages["compute"] == 24_000
    assert stages["triton"] + stages["compute"] + stages["encode"] == 30_000


@pytest.mark.parametrize(
    "event",
    [
        {"type": "words", "words": [{"word": "hi", "start_ms": "soon", "end_ms": 10}]},
        {"type": "words", "words": ["not an object"]},
        ["not", "an", "object"],
    ],
)
def test_a_malformed_model_event_fails_only_its_context(event):
    s = new_session()
    a, b = opened(s, "a"), opened(s, "b")
    for cid in ("a", "b"):
        s.receive(Req(context_id=cid, append=synthesis_pb2.AppendText(text="Hi. ")))
    out = s.model_response(a.key, response(100, final=False, events=[event])).to_client
    assert [reason(r) for r in out if r.HasField("error")] == ["MODEL_ERROR"]
    assert out[-1].context_id == "a" and "a" not in s.contexts
    later = s.model_response(b.key, response(100, final=True)).to_client  # b goes on
    assert later[0].HasField("audio") and b.state.value == "open"


def test_a_unit_ended_without_done_fails_its_context_and_no_ack_follows():
    s = new_session()
    ctx = opened(s, "a")
    s.receive(Req(context_id="a", append=synthesis_pb2.AppendText(text="Hi. ")))
    s.receive(Req(context_id="a", flush=synthesis_pb2.Flush(flush_id="f")))
    bare = ModelResponse(events=(), compute_us=10, audio=None, final=True)
    out = s.model_response(ctx.key, bare).to_client
    assert [reason(r) for r in out if r.HasField("error")] == ["MODEL_ERROR"]
    assert not any(r.HasField("flush_ack") for r in out)


def test_a_unit_ended_without_done_names_the_last_chunk_the_client_got():
    # Found by the session fuzzer: the final response's audio was numbered before the missing
    # `done` failed the context, so the error named a chunk that was never sent.
    s = new_session()
    ctx = opened(s, "a")
    s.receive(Req(context_id="a", append=synthesis_pb2.AppendText(text="Hi. ")))
    with_audio = ModelResponse(
        events=(), compute_us=10, audio=np.full(210, -5, dtype=np.int16), final=True
    )
    out = s.model_response(ctx.key, with_audio).to_client
    errs = [r for r in out if r.HasField("error")]
    assert [reason(r) for r in errs] == ["MODEL_ERROR"]
    assert not any(r.HasField("audio") for r in out)
    assert errs[0].error.last_sequence_number == 0


def test_triton_request_ids_are_made_by_the_server():
    # The same client context id on two streams (and one meant for a log line): the Triton
    # request ids differ and carry none of the client's text.
    cid = "shared\nFAKE LOG LINE"
    ids = []
    for session_id in ("s1", "s2"):
        s = SynthesisSession(
            Limits(), lambda cfg: resolve(cfg, {MODEL.name: MODEL}), session_id=session_id
        )
        opened(s, cid)
        actions = s.receive(
            Req(context_id=cid, append=synthesis_pb2.AppendText(text="Hello there. "))
        )
        ids += [unit.request_id for _, unit in actions.submit]
    assert len(set(ids)) == len(ids) == 2
    assert all("shared" not in i and "\n" not in i for i in ids)


def test_abbreviations_do_not_end_a_sentence():
    text = "Dr. Smith met Mr. J. R. Jones at 5 p.m. today. See e.g. the U.S. rules. Then"
    units, rest = split_ready(text)
    assert units == [
        "Dr. Smith met Mr. J. R. Jones at 5 p.m. today. ",
        "See e.g. the U.S. rules. ",
    ]
    assert rest == "Then"
    assert split_ready("It costs 3.5 dollars. Wait... what? Yes")[0] == [
        "It costs 3.5 dollars. ",
        "Wait... ",
        "what? ",
    ]


def test_units_respect_the_models_own_text_limit():
    small = replace(MODEL, limits=ModelLimits(max_unit_text_bytes=64))
    s = SynthesisSession(Limits(), lambda cfg: resolve(cfg, {small.name: small}), session_id="s")
    opened(s, "plain")
    # Plain text without a sentence end is cut so that every unit fits the model.
    actions = s.receive(Req(context_id="plain", append=synthesis_pb2.AppendText(text="word " * 40)))
    assert actions.submit and all(len(u.text.encode()) <= 64 for _, u in actions.submit)
    # An SSML document is one unit: over the model's limit, the context fails here, with
    # TEXT_TOO_LARGE, instead of at the model.
    ssml = open_msg("ssml")
    ssml.open.text_format = synthesis_pb2.TEXT_FORMAT_SSML
    (ctx,) = s.receive(ssml).open
    s.opened(ctx, "r0")
    doc = "<speak>" + "word " * 20 + "</speak>"
    s.receive(Req(context_id="ssml", append=synthesis_pb2.AppendText(text=doc)))
    out = s.receive(Req(context_id="ssml", flush=synthesis_pb2.Flush(flush_id="f"))).to_client
    assert [reason(r) for r in out] == ["TEXT_TOO_LARGE"] and out[0].context_id == "ssml"


def test_a_resumed_context_continues_its_timeline_numbering_and_text_offsets():
    s = new_session()
    msg = open_msg("a")
    msg.open.timeline_offset_ms = 5000
    msg.open.first_sequence_number = 41
    (ctx,) = s.receive(msg).open
    s.opened(ctx, "r0")
    s.receive(Req(context_id="a", append=synthesis_pb2.AppendText(text="Hi there. Bye now. ")))
    one = [{"word": "there", "start_ms": 0, "end_ms": 90, "text_offset": 3, "text_length": 5}]
    two = [{"word": "now", "start_ms": 0, "end_ms": 90, "text_offset": 4, "text_length": 3}]
    first = s.model_response(ctx.key, audio_response(1600, final=True, words=one)).to_client
    second = s.model_response(ctx.key, audio_response(1600, final=True, words=two)).to_client
    chunks = [r.audio for r in first + second if r.HasField("audio")]
    assert [(c.sequence_number, c.start_ms) for c in chunks] == [(41, 5000), (42, 5100)]
    words = [w for r in first + second if r.HasField("words") for w in r.words.words]
    text = "Hi there. Bye now. "
    # Offsets are in the context's text: the second unit starts at "Bye".
    assert [text[w.text_offset : w.text_offset + w.text_length] for w in words] == ["there", "now"]
    assert [w.start_ms for w in words] == [5000, 5100]
    s.receive(Req(context_id="a", close=synthesis_pb2.CloseContext()))


def test_messages_after_a_close_are_answered_after_done_and_cost_no_audio():
    # A second close, a flush or text after the close failed the closing context
    # (INVALID_MESSAGE): its audio was dropped, or not, by timing. It speaks all its text and
    # ends with done; each late kind is answered after that, as for a context not open.
    s = new_session()
    ctx = opened(s, "a")
    s.receive(Req(context_id="a", append=synthesis_pb2.AppendText(text="Last words")))
    actions = s.receive(Req(context_id="a", close=synthesis_pb2.CloseContext()))
    assert [u.text for _, u in actions.submit] == ["Last words"]
    for late in (
        Req(context_id="a", close=synthesis_pb2.CloseContext()),
        Req(context_id="a", close=synthesis_pb2.CloseContext()),
        Req(context_id="a", flush=synthesis_pb2.Flush(flush_id="f")),
        Req(context_id="a", append=synthesis_pb2.AppendText(text="more")),
    ):
        assert s.receive(late).to_client == []  # nothing yet: the context still speaks
    out = s.model_response(ctx.key, audio_response(1600, final=True)).to_client
    kinds = [r.WhichOneof("response") for r in out]
    assert kinds == ["audio", "done", "error", "error", "error"], kinds
    reasons = [reason(r) for r in out[2:]]
    assert reasons == ["CONTEXT_NOT_OPEN", "UNKNOWN_CONTEXT", "UNKNOWN_CONTEXT"], reasons
    assert "2 close messages after its close" in out[4].error.error.message, out[4]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"timeline_offset_ms": 2**32 - 100}, ["open.timeline_offset_ms", "open.skip_audio_ms"]),
        ({"first_sequence_number": 2**32 - 1}, ["open.first_sequence_number"]),
        ({"text_format": 99}, ["open.text_format"]),
    ],
)
def test_an_open_the_contract_cannot_carry_through_is_refused_at_once(fields, named):
    # Offsets with no room for the context were INTERNAL (ValueError) at its first chunk; an
    # unknown text format (proto3 enums are open) was spoken as plain text, silently.
    s = new_session()
    msg = open_msg("a")
    for name, value in fields.items():
        setattr(msg.open, name, value)
    (error,) = s.receive(msg).to_client
    assert reason(error) == "INVALID_CONFIG", error
    assert [v.field for v in error.error.error.field_violations] == named, error
