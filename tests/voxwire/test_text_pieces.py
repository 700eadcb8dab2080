"""voxwire.text_pieces: long text cut where sentences end, and the feed that sends it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxwire.text_pieces import Append, Close, Flush, TextFeed, piece_bytes, pieces


@given(st.text(max_size=600), st.integers(min_value=4, max_value=120))
def test_pieces_join_to_the_text_each_within_its_bytes(text: str, max_bytes: int) -> None:
    cut = pieces(text, max_bytes)
    assert "".join(cut) == text
    assert all(0 < len(p.encode()) <= max_bytes for p in cut)


@pytest.mark.parametrize(
    ("text", "max_bytes", "expected"),
    [
        # At the last sentence end that fits, not at the last space.
        ("One two. Three four five six.", 20, ["One two. ", "Three four five six."]),
        # "Dr." is no sentence end.
        ("Dr. Smith went home. He slept.", 25, ["Dr. Smith went home. ", "He slept."]),
        # A paragraph break in the piece's second half wins over a later sentence end.
        ("Aaa bbb ccc.\n\nDdd. Eee fff ggg.", 22, ["Aaa bbb ccc.\n\n", "Ddd. Eee fff ggg."]),
        # No sentence end: at the last space; a word longer than a piece: inside it.
        ("aaaa bbbb cccc", 10, ["aaaa bbbb ", "cccc"]),
        ("abcdefghij", 4, ["abcd", "efgh", "ij"]),
        # Bytes, not characters: "é" is two.
        ("éééé éé", 6, ["ééé", "é ", "éé"]),
    ],
)
def test_pieces_end_where_sentences_do(text: str, max_bytes: int, expected: list[str]) -> None:
    assert pieces(text, max_bytes) == expected


def test_piece_bytes_fits_two_pieces_under_the_servers_limit() -> None:
    assert piece_bytes(16384) == 4096 and piece_bytes(2000) == 1000 and piece_bytes(0) == 4096


def test_the_feed_keeps_two_pieces_waiting_and_what_follows_in_order() -> None:
    feed = TextFeed(12, prefix="p-")
    assert feed.idle and not feed.holding
    feed.append("One two. Three four. Five six. Seven. ")
    feed.flush("mine")
    feed.append("End.")
    feed.close()
    assert feed.more() == [
        Append("One two. "),
        Flush("p-1", ours=True),
        Append("Three four. "),
        Flush("p-2", ours=True),
    ]
    assert feed.more() == []  # two flushes wait
    assert feed.acked("p-1") is True
    # The last of the text before the client's flush goes as it is: that flush cuts it.
    assert feed.more() == [Append("Five six. "), Flush("p-3", ours=True)]
    assert feed.acked("p-2")
    assert feed.more() == [Append("Seven. "), Flush("mine", ours=False)]
    assert feed.acked("mine") is False  # the client's: its ack is the client's to see
    assert feed.more() == [Append("End."), Close()]
    assert feed.idle and feed.holding  # p-3 still waits
    assert feed.acked("p-3") and not feed.holding


def test_short_text_on_an_idle_feed_goes_as_it_is_and_clear_drops_the_rest() -> None:
    feed = TextFeed(100, prefix="p-")
    feed.append("Hello ")
    feed.append("there.")  # joined: pieces are cut from the text as a whole
    assert feed.more() == [Append("Hello there.")]
    feed.append("x. " * 100)
    feed.close()
    assert len(feed.more()) == 4
    feed.clear()
    assert feed.idle and not feed.holding and feed.more() == []
