"""PlayoutLedger (voxwire.client.playout): Twilio's mark echoes read as played positions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from voxwire.client.playout import Echo, PlayoutLedger


def send(ledger: PlayoutLedger, context: str, chunks: int, now: float, ms: int = 100) -> list[str]:
    return [ledger.sent(context, i * ms, ms, now) for i in range(chunks)]


def test_an_echo_confirms_its_mark_and_every_one_before_it():
    ledger = PlayoutLedger()
    a = send(ledger, "a", 3, now=0.0)
    echo = ledger.echoed(a[1], now=0.2)
    assert echo == Echo(ours=True, played=(("a", 200),))
    assert ledger.unplayed("a")
    assert ledger.echoed(a[2], now=0.3) == Echo(ours=True, played=(("a", 300),))
    assert not ledger.unplayed()


def test_a_foreign_mark_is_not_ours():
    ledger = PlayoutLedger()
    send(ledger, "a", 1, now=0.0)
    assert ledger.echoed("greeting-done", now=0.1) == Echo(ours=False)
    assert ledger.unplayed("a")


def test_the_position_runs_with_the_clock_at_most_one_chunk_past_the_last_echo():
    ledger = PlayoutLedger()
    a = send(ledger, "a", 5, now=10.0)
    assert ledger.position("a", 10.05) == 50  # the head chunk has played 50 ms
    assert ledger.position("a", 10.5) == 100  # no echo: at most the head chunk
    ledger.echoed(a[1], now=10.6)
    assert ledger.position("a", 10.6) == 200
    assert ledger.position("a", 10.63) == 230
    assert ledger.position("b", 10.63) is None


def test_a_context_behind_another_has_not_started():
    ledger = PlayoutLedger()
    send(ledger, "a", 2, now=0.0)
    send(ledger, "b", 2, now=0.0)
    assert ledger.position("b", 0.15) == 0
    assert ledger.clear(0.15) == {"a": 100, "b": 0}


def test_echoes_after_a_clear_are_consumed_never_played():
    ledger = PlayoutLedger()
    a = send(ledger, "a", 4, now=0.0)
    ledger.echoed(a[0], now=0.1)
    assert ledger.clear(0.14) == {"a": 140}
    assert not ledger.unplayed()
    # Twilio echoes the marks that were in its buffer: not played.
    for name in a[1:]:
        assert ledger.echoed(name, now=0.15) == Echo(ours=True, discarded=True)
    # Once consumed, the names are forgotten (bounded), and new audio is tracked afresh.
    b = send(ledger, "b", 1, now=1.0)
    assert ledger.echoed(b[0], now=1.1) == Echo(ours=True, played=(("b", 100),))


def test_a_send_into_an_empty_fifo_starts_the_clock_again():
    ledger = PlayoutLedger()
    a = send(ledger, "a", 1, now=0.0)
    ledger.echoed(a[0], now=0.1)
    ledger.sent("a", 100, 100, now=5.0)  # the model was slow: Twilio ran dry, plays at once
    assert ledger.position("a", 5.04) == 140


@given(
    st.lists(st.integers(min_value=20, max_value=200), min_size=1, max_size=30),
    st.integers(min_value=0, max_value=6000),
)
def test_the_estimate_is_within_one_chunk_of_a_real_time_playout(durations, clear_at_ms):
    """A FIFO played at real time from t=0, echoing each mark as its chunk ends, cleared at
    ``clear_at_ms``: the ledger's position is the truth, give or take the head chunk."""
    ledger = PlayoutLedger()
    names, start = [], 0
    for d in durations:
        names.append((ledger.sent("a", start, d, now=0.0), start + d))
        start += d
    for name, end in names:
        if end <= clear_at_ms:
            ledger.echoed(name, now=end / 1000)
    truth = min(clear_at_ms, start)
    position = ledger.clear(clear_at_ms / 1000).get("a", start)
    assert abs(position - truth) <= 1  # whole ms


@given(
    st.lists(st.integers(min_value=20, max_value=200), min_size=2, max_size=30),
    st.integers(min_value=0, max_value=80),
    st.integers(min_value=0, max_value=6000),
)
def test_the_round_trip_is_learned_and_counted(durations, one_way_ms, after_ms):
    """The same playout behind a network ``one_way_ms`` each way: chunks sent at t=0 play from
    ``one_way_ms``, each echo arrives ``one_way_ms`` after its chunk ends, and a clear sent at
    ``c`` stops playback at ``c + one_way_ms``: ``c`` ms played. Once the first echo is in
    (the round trip measured from it), the ledger says the same."""
    ledger = PlayoutLedger()
    names, start = [], 0
    for d in durations:
        names.append((ledger.sent("a", start, d, now=0.0), start + d))
        start += d
    first_echo_ms = durations[0] + 2 * one_way_ms
    clear_at_ms = first_echo_ms + after_ms
    for name, end in names:
        if end + 2 * one_way_ms <= clear_at_ms:
            ledger.echoed(name, now=(end + 2 * one_way_ms) / 1000)
    assert ledger.rtt_s is not None and abs(ledger.rtt_s * 1000 - 2 * one_way_ms) < 0.01
    truth = min(clear_at_ms, start)
    position = ledger.clear(clear_at_ms / 1000).get("a", start)
    assert abs(position - truth) <= 1


def test_clear_and_position_agree():
    ledger = PlayoutLedger()
    send(ledger, "a", 3, now=0.0)
    send(ledger, "b", 3, now=0.1)
    ledger.sent("a", 300, 100, now=0.2)
    expected = {c: ledger.position(c, 0.25) for c in ("a", "b")}
    assert ledger.clear(0.25) == expected == {"a": 100, "b": 0}
