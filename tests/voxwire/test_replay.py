"""The replay windows: what is kept, what a resume gets, and the bounds."""

from __future__ import annotations

import random

import pytest

from voxwire.errors import ResumeRejected
from voxwire.replay import AudioReplayWindow, TextReplay, WordMark, cut_audio
from voxwire.v1 import audio_pb2


def pcm(frames: int, start: int = 0) -> bytes:
    """PCM16 mono whose sample n is (start + n) mod 65536: every byte says where it came from."""
    return b"".join(((start + n) & 0xFFFF).to_bytes(2, "little") for n in range(frames))


def test_replay_from_the_ack_returns_exactly_the_audio_after_it():
    window = AudioReplayWindow(2, 16000, max_ms=30_000)
    sent = b""
    for i in range(50):  # 50 chunks of 100 ms
        chunk = pcm(1600, start=i * 1600)
        window.append(chunk)
        sent += chunk
    assert window.received_ms == 5000
    window.ack(4200)
    assert window.start_ms == 4200 and window.unacked_ms == 800
    assert window.audio_since(4200) == sent[4200 * 32 :]
    assert window.held_bytes == 800 * 32
    # A later position inside the window is fine too (a client acked further than the server).
    assert window.audio_since(4900) == sent[4900 * 32 :]


def test_random_chunks_and_acks_keep_the_exact_bytes():
    rng = random.Random(4)
    for rate in (8000, 11025, 16000, 22050, 44100, 48000):
        frame_bytes = rng.choice((1, 2, 4, 8))
        window = AudioReplayWindow(frame_bytes, rate, max_ms=10_000_000)
        sent = bytearray()
        acked = 0
        for _ in range(200):
            frames = rng.randrange(0, 3000)
            chunk = bytes(rng.getrandbits(8) for _ in range(frames * frame_bytes))
            window.append(chunk)
            sent += chunk
            if rng.random() < 0.3:
                acked = rng.randrange(acked, window.received_ms + 1)
                window.ack(acked)
            start = rng.randrange(acked, window.received_ms + 1)
            first = start * rate // 1000
            assert window.audio_since(start) == bytes(sent[first * frame_bytes :]), (rate, start)


def test_replay_from_before_the_window_or_past_the_end_is_refused():
    window = AudioReplayWindow(2, 16000, max_ms=30_000)
    window.append(pcm(16000))
    window.ack(500)
    with pytest.raises(ResumeRejected):
        window.audio_since(400)
    with pytest.raises(ResumeRejected):
        window.audio_since(1001)
    assert window.audio_since(1000) == b""


def test_stale_ack_changes_nothing():
    window = AudioReplayWindow(2, 16000, max_ms=30_000)
    window.append(pcm(16000))
    window.ack(600)
    window.ack(300)
    assert window.start_ms == 600


def test_the_bound_drops_oldest_audio_and_says_the_window_is_no_longer_lossless():
    window = AudioReplayWindow(2, 16000, max_ms=1000)
    window.append(pcm(16000 * 3))  # 3 s into a 1 s window
    assert window.held_bytes == 16000 * 2
    assert not window.lossless
    with pytest.raises(ResumeRejected):
        window.audio_since(0)
    window.ack(2500)  # an ack inside what is held makes it whole again
    assert window.lossless


def test_a_resumed_window_counts_from_its_base():
    window = AudioReplayWindow(1, 8000, max_ms=30_000, base_ms=4200)
    window.append(bytes(800))
    assert (window.start_ms, window.received_ms) == (4200, 4300)
    assert window.audio_since(4250) == bytes(400)


def test_misaligned_audio_is_refused():
    window = AudioReplayWindow(4, 16000, max_ms=1000)
    with pytest.raises(ValueError):
        window.append(b"\x00" * 6)


# -- TTS ----------------------------------------------------------------------------------------


def speak(replay: TextReplay, text: str, words: list[tuple[str, int, int]]) -> None:
    """Words of ``text`` with (word, start_ms, end_ms); offsets found in ``text``."""
    pos = 0
    for word, _, end in words:
        at = text.index(word, pos)
        replay.word(WordMark(at, len(word), end))
        pos = at + len(word)


def test_resume_point_is_after_the_last_completely_received_word():
    replay = TextReplay()
    text = "Hello there, how are you today?"
    replay.append(text)
    speak(replay, text, [("Hello", 0, 300), ("there", 300, 650), ("how", 700, 900)])
    replay.audio(1, 0, 400)
    replay.audio(2, 400, 400)  # audio to 800 ms: "how" (ends 900) is not complete
    point = replay.resume_point()
    assert point.text == ", how are you today?"
    assert point.text_offset == text.index(",")
    assert (point.timeline_offset_ms, point.first_sequence_number) == (800, 3)


def test_nothing_received_resumes_from_the_start():
    replay = TextReplay()
    replay.append("One. Two.")
    point = replay.resume_point()
    assert (point.text, point.text_offset, point.timeline_offset_ms) == ("One. Two.", 0, 0)
    assert point.first_sequence_number == 1


def test_words_of_a_resumed_stream_are_rebased_and_spoken_text_is_dropped():
    replay = TextReplay()
    text = "alpha beta gamma delta"
    replay.append(text)
    speak(replay, text, [("alpha", 0, 200), ("beta", 200, 400)])
    replay.audio(1, 0, 450)
    point = replay.resume_point()
    assert point.text == " gamma delta"
    replay.resumed(point)
    # The new stream only saw " gamma delta": its offsets count from there.
    replay.word(WordMark(1, 5, 700))
    replay.audio(4, 450, 300)
    again = replay.resume_point()
    assert again.text == " delta"
    assert again.text_offset == text.index(" delta")
    assert (again.timeline_offset_ms, again.first_sequence_number) == (750, 5)


def test_replay_since_puts_each_control_after_the_audio_before_it():
    window = AudioReplayWindow(2, 1000, max_ms=60_000)  # 1 frame per ms: frames are ms
    window.append(pcm(100, start=0))
    window.append(pcm(100, start=100))
    window.append(pcm(100, start=200))
    window.ack(50)
    controls = [(250, "inside"), (100, "boundary"), (20, "acked"), (300, "end"), (100, "next")]
    out = window.replay_since(50, controls)
    # A control before the start comes first; at a piece boundary it follows that piece; inside
    # a piece, the piece is split there; the original cuts are kept otherwise.
    assert out == [
        "acked",
        pcm(50, start=50),
        "boundary",
        "next",
        pcm(100, start=100),
        pcm(50, start=200),
        "inside",
        pcm(50, start=250),
        "end",
    ]
    assert b"".join(x for x in out if isinstance(x, bytes)) == window.audio_since(50)
    with pytest.raises(ResumeRejected):
        window.replay_since(40, controls)


def test_replay_since_the_end_is_the_controls_alone():
    window = AudioReplayWindow(2, 16000, max_ms=1000)
    window.append(pcm(1600))
    window.ack(100)
    assert window.replay_since(100, [(1600, "finalize")]) == ["finalize"]


def test_a_window_with_nothing_unacknowledged_holds_no_chunk_queue():
    """Memory per idle session: the queue of chunks exists only while audio is held."""
    window = AudioReplayWindow(2, 16000, max_ms=1000)
    assert window._chunks is None and window.audio_since(0) == b""
    window.append(b"\x01\x00" * 160)  # 10 ms
    assert window._chunks is not None
    window.ack(10)
    assert window._chunks is None and window.audio_since(10) == b""
    window.append(b"\x02\x00" * 16)
    assert window.audio_since(10) == b"\x02\x00" * 16


# -- TTS, SSML: a document resumes whole ------------------------------------------------------

DOC1 = '<speak>One <break time="1s"/> two.</speak>'
DOC2 = "<speak>Three, four.</speak>"


def test_an_ssml_document_is_never_cut_after_a_word():
    # Cut after "One", the document would be `<break time="1s"/> two.</speak>`: SSML_INVALID
    # on the reopened context (the SDK's resume of an SSML context failed this way).
    replay = TextReplay(ssml=True)
    replay.append(DOC1)
    replay.flushed()
    replay.append(DOC2)
    replay.word(WordMark(DOC1.index("One"), 3, 300))
    replay.audio(1, 0, 400)
    point = replay.resume_point()
    assert point.text == DOC1 + DOC2 and point.text_offset == 0
    # From the document's start, the 400 ms received not to be sent again, numbered on.
    assert (point.timeline_offset_ms, point.skip_audio_ms, point.first_sequence_number) == (
        0,
        400,
        2,
    )
    assert point.flushes_at == (len(DOC1),)
    assert point.requests(["f1"]) == [("append", DOC1), ("flush", "f1"), ("append", DOC2)]
    # The flush acknowledged, the first document is all in: the next resume starts after it.
    replay.audio(2, 400, 1300)
    replay.flush_acked()
    replay.audio(3, 1700, 100)
    point = replay.resume_point()
    assert (point.text, point.text_offset) == (DOC2, len(DOC1))
    assert (point.timeline_offset_ms, point.skip_audio_ms, point.first_sequence_number) == (
        1700,
        100,
        4,
    )
    assert point.requests([]) == [("append", DOC2)]


def test_a_reopened_ssml_document_drops_what_a_server_sends_again():
    replay = TextReplay(ssml=True)
    replay.continues(5000, 40)  # itself a resumed context: the timeline goes on from there
    replay.append(DOC2)
    for seq, start in ((41, 5000), (42, 5100), (43, 5200)):
        assert replay.take(seq, start, 100) == (seq, start, 0)
        replay.audio(seq, start, 100)
    point = replay.resume_point()
    assert (point.timeline_offset_ms, point.skip_audio_ms, point.first_sequence_number) == (
        5000,
        300,
        44,
    )
    replay.resumed(point)
    # A server without synthesis_skip_audio speaks the document again from 5,000 ms, in
    # chunks of its own size, numbered from 44.
    assert replay.take(44, 5000, 120) is None
    assert replay.take(45, 5120, 120) is None
    # A flush ack or end naming a chunk dropped so far: the last chunk received.
    assert replay.number(45) == 43
    taken = replay.take(46, 5240, 120)  # 5,240-5,300 was received: cut 60 ms
    assert taken == (44, 5300, 60)
    replay.audio(44, 5300, 60)
    assert replay.take(47, 5360, 120) == (45, 5360, 0)
    # ... and after that, shifted as the chunks are (the props test found `done` naming 13
    # after chunks numbered up to 12).
    assert (replay.number(47), replay.number(0)) == (45, 0)


def test_a_server_that_skips_what_was_received_is_passed_through():
    replay = TextReplay(ssml=True)
    replay.append(DOC2)
    replay.audio(1, 0, 300)
    point = replay.resume_point()
    replay.resumed(point)
    assert replay.take(2, 300, 100) == (2, 300, 0)
    # The gateway that a resuming SDK opens the context on: it was told what the client has.
    other = TextReplay(ssml=True)
    other.continues(point.timeline_offset_ms, point.first_sequence_number - 1, 300)
    other.append(point.text)
    assert other.take(2, 0, 100) is None  # an adapter that sends it again
    assert other.take(5, 300, 100) == (2, 300, 0)
    other.audio(2, 300, 100)
    assert other.resume_point().skip_audio_ms == 400


def test_an_ssml_resume_skips_only_as_far_as_the_words_received_reach():
    # A word's timestamp can come after audio past its end (eSpeak knows a word's end when the
    # next one starts). The server sends no timestamp of a word that ends within the skip, so
    # skipping all the audio received lost such a word for good.
    replay = TextReplay(ssml=True, timestamps=True)
    replay.append(DOC2)
    replay.word(WordMark(DOC2.index("Three"), 5, 300))
    replay.audio(1, 0, 400)
    replay.audio(2, 400, 200)  # "four" ends at 550: its timestamp has not come
    point = replay.resume_point()
    assert (point.timeline_offset_ms, point.skip_audio_ms, point.first_sequence_number) == (
        0,
        300,
        3,
    )
    replay.resumed(point)
    # The server sends 300-600 ms again, numbered from 3: dropped as received, the rest on.
    assert replay.take(3, 300, 200) is None
    assert replay.take(4, 500, 200) == (3, 600, 100)
    # No timestamp asked for: nothing to wait for, all the audio received is skipped.
    plain = TextReplay(ssml=True)
    plain.append(DOC2)
    plain.audio(1, 0, 400)
    assert plain.resume_point().skip_audio_ms == 400
    # A document acknowledged is all in, its words too; a later one's words count from there.
    replay.audio(3, 600, 100)
    replay.flushed()
    replay.flush_acked()
    replay.append(DOC1)
    replay.audio(4, 700, 100)
    assert replay.resume_point().skip_audio_ms == 0  # none of DOC1's words came yet


def test_plain_text_resumes_its_flushes_at_their_places():
    replay = TextReplay()
    replay.append("One two.")
    replay.flushed()
    replay.append(" Three four.")
    replay.flushed()
    replay.append(" Five.")
    speak(replay, "One two.", [("One", 0, 200)])
    replay.audio(1, 0, 250)
    point = replay.resume_point()
    assert point.text == " two. Three four. Five."
    assert point.requests(["a", "b"]) == [
        ("append", " two."),
        ("flush", "a"),
        ("append", " Three four."),
        ("flush", "b"),
        ("append", " Five."),
    ]
    # Plain text is never spoken again: nothing to drop, numbers unchanged.
    replay.resumed(point)
    assert replay.take(2, 250, 100) == (2, 250, 0)


def test_cut_audio_cuts_whole_samples():
    audio = pcm(2205)  # 100 ms at 22,050 Hz
    pcm16 = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=22050)
    assert cut_audio(audio, 40, pcm16) == audio[882 * 2 :]
    assert cut_audio(audio, 0, pcm16) is audio
