"""The upload decoder's own process: libsndfile, fed an upload's body, answering its audio.

libsndfile and the codecs it loads (libFLAC, libvorbis, libmpg123, libopus) parse what any
client uploads. In the gateway's process a crash in one of them (a client-side Vorbis encode
segfaulted here) would end every session the process holds, libmpg123 writes its complaints
about a bad frame straight to the process's stderr (2,801 lines for one 600 s MP3), and
soundfile holds one lock over every open of the process. So each upload is decoded in a child
process of the gateway's ``DecoderPool`` (gateway/http/decoder_pool.py): a crash or a stall
there ends that upload alone, with its error; its stderr is read by the gateway and summed up.

The child decodes one upload at a time, and the next after it: messages on stdin and stdout,
each a type byte and a 4-byte big-endian length, then the payload.

    gateway -> child   S  {"size": int | null, "max_seconds": float, "rates": [int]}
                          an upload begins; its audio is sent at one of ``rates`` (the
                          model's, when the gateway knows them; else the contract's)
                       B  body bytes
                       E  the body ended
                       C  the gateway stopped following this upload (its client left): the
                          body ends with a failure, the decoder answers X at its next read
    child -> gateway   R  ready (once, after its imports)
                       P  4-byte big-endian rate, then PCM16 mono samples
                       D  {"truncated": bool}: the audio is complete
                       X  {"reason": str, "message": str}: the upload failed ("" reason: not
                          a voxwire error)

A ``D`` or ``X`` may come before ``E`` (an error at the open, a header declaring too much): the
child then reads and drops the rest of the body up to ``E``, and is ready for the next ``S``.
After ``C`` the gateway reads and drops what comes up to the ``D`` or ``X``; the child is then
ready for the next ``S`` too (a client that leaves costs no new process).
Flow control is the pipes': the child stops reading stdin while the body is ahead of the
decoder (``BodyPipe.room``), and its decoder waits in ``write`` while the gateway does not read
(the model is slower than the decoder).
"""

from __future__ import annotations

import json
import os
import resource
import struct
import sys
import threading
from typing import BinaryIO

# The most address space a decoder may take (RLIMIT_AS): an idle one maps about 150 MiB, a
# decoding one about 80 MiB more (a thread's stack and malloc arena). What a hostile file makes
# a codec allocate past this fails that upload (400 INVALID_AUDIO) instead of taking the
# machine's memory; before the 4 kHz floor, a WAV header declaring 1 Hz took 400 MiB.
MEMORY_LIMIT_BYTES = 1024 * 1024 * 1024

# Frames libsndfile decodes per block, and so per message: half a second at 16 kHz. Larger
# blocks cost less per second of audio (each is a read through Python callbacks, a downmix,
# a resample and a message); an upload's audio goes to the model no sooner block by block.
_BLOCK_FRAMES = 8000

HEADER = struct.Struct(">cI")
# Before each PCM block: the rate it is at, and the file's own rate, channels and encoding
# (gateway.http.upload.DecodedFormat).
FORMAT = struct.Struct(">IIII")
START, BODY, END, CANCEL = b"S", b"B", b"E", b"C"
READY, PCM, DONE, FAILED = b"R", b"P", b"D", b"X"


def read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    """``n`` bytes, or None at the end of the stream."""
    data = bytearray()
    while len(data) < n:
        part = stream.read(n - len(data))
        if not part:
            return None
        data += part
    return bytes(data)


def read_message(stream: BinaryIO) -> tuple[bytes, bytes] | None:
    header = read_exactly(stream, HEADER.size)
    if header is None:
        return None
    kind, length = HEADER.unpack(header)
    payload = read_exactly(stream, length) if length else b""
    return None if payload is None else (kind, payload)


def encode(kind: bytes, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


class _Output:
    """stdout, written by the decoder thread (whole messages)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        self._stream.write(encode(kind, payload))
        self._stream.flush()


def _decode_one(start: dict[str, object], stdin: BinaryIO, out: _Output) -> bool:
    """One upload: the body from stdin into a BodyPipe, its audio to stdout. False at the end
    of stdin (the gateway closed it: exit)."""
    from gateway.http.upload import AudioBudget, BodyPipe, DecodeReport, decode_blocks
    from voxwire.errors import VoxwireError

    room = threading.Event()
    finished = threading.Event()
    size = start.get("size")
    pipe = BodyPipe(size if isinstance(size, int) else None, room.set)
    budget = AudioBudget(float(start["max_seconds"]))  # type: ignore[arg-type]
    rates = tuple(int(r) for r in start.get("rates") or ())  # type: ignore[attr-defined]

    def decode() -> None:
        report = DecodeReport()
        try:
            for fmt, pcm in decode_blocks(pipe, _BLOCK_FRAMES, report, budget, rates):
                head = (fmt.rate, fmt.source_rate, fmt.source_channels, fmt.source_encoding)
                out.send(PCM, FORMAT.pack(*head) + pcm)
            out.send(DONE, json.dumps({"truncated": report.truncated}).encode())
        except VoxwireError as exc:
            out.send(FAILED, json.dumps({"reason": exc.reason, "message": str(exc)}).encode())
        except MemoryError:
            limit = MEMORY_LIMIT_BYTES >> 20
            message = f"decoding it needs more than the decoder's {limit} MiB of memory"
            out.send(FAILED, json.dumps({"reason": "", "message": message}).encode())
        except Exception as exc:  # libsndfile's own, numpy's: the file's fault, told as such
            out.send(FAILED, json.dumps({"reason": "", "message": str(exc)}).encode())
        finally:
            finished.set()
            room.set()  # the reader below may be waiting for room that will never come

    worker = threading.Thread(target=decode, name="upload-decoder")
    worker.start()
    more = True
    failure: str | None = None
    try:
        while True:
            message = read_message(stdin)
            if message is None:
                more, failure = False, "the gateway went away"
                break
            kind, payload = message
            if kind == END:
                break
            if kind == CANCEL:
                failure = "cancelled: the upload's client left"
                break
            if kind != BODY or finished.is_set():
                continue  # after the decoder's end the rest of the body is dropped
            pipe.put(payload)
            while not pipe.room() and not finished.is_set():
                room.clear()
                if not pipe.room() and not finished.is_set():
                    room.wait()
    finally:
        pipe.end(failure)
        worker.join()
        pipe.close()
    return more


# prctl(2) option: the signal a process gets when its parent ends (linux/prctl.h).
_PR_SET_PDEATHSIG = 1


def _end_with_the_gateway(gateway_pid: int) -> None:
    """SIGKILL this process when the gateway that started it ends, however it ends (prctl(2),
    PR_SET_PDEATHSIG). A decoder reading stdin leaves at its end anyway; one held in a codec
    (or stopped) outlived a gateway killed with SIGKILL. The signal follows the thread that
    started the child: the gateway starts decoders from its event loop's thread, which lives
    as long as the process. A gateway that ended before the call is caught by the check after
    it (the child has been adopted)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        print(f"upload decoder: prctl failed (errno {ctypes.get_errno()})", file=sys.stderr)
    if os.getppid() != gateway_pid:
        os._exit(0)


def main() -> int:
    _end_with_the_gateway(int(sys.argv[1]) if len(sys.argv) > 1 else os.getppid())
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    # Unbuffered binary streams: every message goes out whole, at once.
    stdin = os.fdopen(sys.stdin.fileno(), "rb", buffering=0)
    stdout = os.fdopen(sys.stdout.fileno(), "wb", buffering=0)
    sys.stdout = sys.stderr  # nothing else may write to the message stream
    out = _Output(stdout)
    import soundfile  # noqa: F401

    import gateway.http.upload  # noqa: F401  (numpy, soxr: paid before READY, not per upload)

    out.send(READY)
    while True:
        message = read_message(stdin)
        if message is None:
            return 0
        kind, payload = message
        if kind != START:
            print(f"upload decoder: expected a start, got {kind!r}", file=sys.stderr)
            return 2
        if not _decode_one(json.loads(payload), stdin, out):
            return 0


if __name__ == "__main__":
    sys.exit(main())
