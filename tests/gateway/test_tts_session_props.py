"""TtsEdgeSession's flow-control rule under any interleaving (hypothesis): model responses read
only while ``has_room`` allows (as the runner does), time passing, several contexts at once.

Invariants (docs/design/edge.md, "Flow control"):
- the session's queues never hold more than ``read_ahead_bytes`` plus each context's floor plus
  one response per context: the memory bound whatever the model and the listener do;
- a context is never held back below its floor, whatever the other contexts hold;
- no chunk leaves earlier than its place in the timeline allows (``lead``, within 1 ms);
- each context's chunks leave in order, none twice, none skipped.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.tts.session import FLOOR_MIN_BYTES, TtsEdgeSession, TtsLimits
from gateway.wire.frames import unpack
from tests.helpers.clock import Clock
from voxwire.edge.v1 import tts_pb2
from voxwire.v1 import audio_pb2, synthesis_pb2

Client = tts_pb2.TtsClientMessage
Up = synthesis_pb2.StreamingSynthesizeResponse
MAX_CHUNK_MS = 200


# A model that makes up to 40 chunks at once (it is faster than real time), and time passing
# in steps that are often shorter than a chunk.
steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("read"), st.integers(0, 3), st.integers(1, 40), st.integers(20, MAX_CHUNK_MS)
        ),
        st.tuples(st.just("wait"), st.integers(0, 3), st.integers(0, 0), st.floats(0.0, 0.3)),
    ),
    min_size=1,
    max_size=200,
)


@settings(max_examples=150, deadline=None)
@given(
    lead_ms=st.sampled_from([0, 300, 1000]),
    read_ahead=st.sampled_from([0, 50_000, 300_000]),
    rate=st.sampled_from([8000, 24000, 48000]),
    contexts=st.integers(1, 4),
    script=steps,
)
def test_the_queues_stay_bounded_and_paced_whatever_the_interleaving(
    lead_ms: int,
    read_ahead: int,
    rate: int,
    contexts: int,
    script: list[tuple[str, int, int, float]],
) -> None:
    clock = Clock()
    session = TtsEdgeSession(
        TtsLimits(lead_ms=lead_ms, read_ahead_bytes=read_ahead),
        session_id="p1",
        issue_token=lambda options, *_: ("tok", 2e9),
        clock=clock,
    )
    fmt = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=rate)
    keys, handles = [], {}
    for i in range(contexts):
        cid = f"c{i}"
        config = synthesis_pb2.SynthesisContextConfig(output_format=fmt)
        key = session.client_message(Client(context_id=cid, open=config)).open_upstream[0].key
        opened = session.upstream_response(
            key, Up(context_id=cid, opened=synthesis_pb2.ContextOpened())
        )
        handles[next(m.opened.handle for m in opened.to_client if not isinstance(m, bytes))] = i
        keys.append(key)
    bytes_per_ms = rate * 2 / 1000
    floor = max((lead_ms + TtsLimits().queue_slack_ms) * bytes_per_ms, FLOOR_MIN_BYTES)
    bound = read_ahead + contexts * (floor + MAX_CHUNK_MS * bytes_per_ms)
    made = [0] * contexts  # chunks each context's model has produced
    made_ms = [0] * contexts
    sent = [0] * contexts  # the last sequence number each context sent
    first: dict[int, tuple[float, int]] = {}  # context -> (when its first chunk left, its start)

    def check(out: list[tts_pb2.TtsServerMessage | bytes]) -> None:
        for item in out:
            if not isinstance(item, bytes):
                continue
            frame = unpack(item)
            i = handles[frame.handle]
            assert frame.sequence_number == sent[i] + 1
            sent[i] = frame.sequence_number
            at, start = first.setdefault(i, (clock.now, frame.start_ms))
            if lead_ms > 0:
                played_ms = (clock.now - at) * 1000
                assert frame.start_ms - start <= played_ms + lead_ms + 1
        queued = sum(c.queued_bytes for c in session.contexts.values())
        assert queued <= bound

    for kind, which, count, value in script:
        i = which % contexts
        if kind == "wait":
            clock.now += value
            check(session.on_time().to_client)
            continue
        for _ in range(count):
            if not session.has_room(keys[i]):
                # Never held back below its floor, whatever the other contexts hold.
                assert session.contexts[f"c{i}"].queued_bytes >= floor
                break  # the runner does not read this call now
            made[i] += 1
            ms = int(value)
            audio = synthesis_pb2.AudioChunk(
                sequence_number=made[i],
                audio=bytes(round(ms * bytes_per_ms)),
                start_ms=made_ms[i],
                duration_ms=ms,
            )
            made_ms[i] += ms
            check(session.upstream_response(keys[i], Up(context_id=f"c{i}", audio=audio)).to_client)
    # Time enough for every queue to play out: everything read is sent, in order.
    clock.now += sum(made_ms) / 1000 + 5
    check(session.on_time().to_client)
    assert sent == made
