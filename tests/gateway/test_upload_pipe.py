"""The upload pipe under libsndfile: its read callback never raises.

``BodyPipe.readinto`` runs inside soundfile's ``vio_read``, a cffi callback: an exception there
is printed to stderr as "Exception ignored from cffi callback" with its traceback (the edge
fuzzer counted one per upload a client abandoned) and libsndfile reads 0 bytes anyway.
"""

from __future__ import annotations

import struct
import sys
import threading

import numpy as np
import pytest

from gateway.http import upload
from gateway.http.upload import BodyPipe, decode_blocks
from voxwire import errors


def _wav_header(rate: int, frames: int) -> bytes:
    size = frames * 2
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + size)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + (b"data" + struct.pack("<I", size))
    )


@pytest.fixture
def unraisable(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    monkeypatch.setattr(
        sys, "unraisablehook", lambda hook: seen.append(f"{hook.err_msg}: {hook.exc_value!r}")
    )
    return seen


def test_a_body_that_fails_mid_decode_ends_the_decoder_with_nothing_printed(unraisable):
    rate, frames = 16000, 16000 * 4
    pcm = (np.sin(np.arange(frames) / 10) * 8000).astype("<i2").tobytes()
    pipe = BodyPipe(44 + len(pcm))
    pipe.put(_wav_header(rate, frames) + pcm[: len(pcm) // 4])
    decoded: list[int] = []
    failure: list[BaseException] = []

    def decode() -> None:
        try:
            for _fmt, block in decode_blocks(pipe):
                decoded.append(len(block))
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=decode)
    worker.start()
    while sum(decoded) < len(pcm) // 8:  # the decoder is waiting for the rest of the body
        worker.join(0.01)
    pipe.end(failure="Connection lost")  # the client went away (gateway/http/stt.py feed)
    worker.join(10)
    assert not worker.is_alive()
    assert unraisable == []
    # The decoder ended (libsndfile pads a WAV cut short with silence up to its declared
    # length; the request fails with the body's own error, gateway/http/stt.py) or failed
    # with the contract's error, never another exception.
    assert sum(decoded) > 0
    assert failure == [] or isinstance(failure[0], errors.InvalidAudio)


def test_a_read_behind_the_kept_window_is_an_error_the_decoder_reports(unraisable):
    size = upload._HEAD + 3 * upload._WINDOW
    pipe = BodyPipe(size)
    pipe.opened()  # decoding (while opening, nothing is dropped and a large body spools)
    pipe.put(bytes(size))
    pipe.end()
    buffer = bytearray(upload._WINDOW)
    pipe.seek(upload._HEAD + 2 * upload._WINDOW)
    assert pipe.readinto(buffer) == upload._WINDOW  # the window moves past the head
    pipe.seek(upload._HEAD + 10)  # before it: neither in the head nor in the window
    assert pipe.readinto(buffer) == 0
    assert pipe.read_error is not None and "outside the kept window" in pipe.read_error
    assert unraisable == []
