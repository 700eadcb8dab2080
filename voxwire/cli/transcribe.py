"""``voxwire transcribe FILE|-``: stream a file (WAV, FLAC, OGG, MP3) or raw stdin to the gateway.

Audio goes out in 100 ms frames, at real time with ``--realtime`` (as a live source would) or
as fast as the gateway takes it (the SDK's replay window and TCP pace it). On a terminal,
interim results update one line and final results are printed as lines, with a progress bar
for files longer than a few seconds; otherwise (a pipe) only final results are printed, one per
line. ``--json`` prints every event as one JSON object per line, in the wire's schema
(``{"result": {...}}``, ``{"summary": {...}}``; the SDK's own ``{"resumed": {...}}``).

Files are read with libsndfile (the soundfile wheel) in a worker thread, a block at a time, as
16-bit PCM at their own rate (more than two channels are mixed down to mono). Raw stdin needs
its format: ``--encoding`` and ``--rate``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import stat
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxwire.cli.common import add_connection_arguments, api_key, fail, urls

if TYPE_CHECKING:
    from rich.console import Console

    from voxwire.client import TranscriptionEvent
    from voxwire.v1 import transcription_pb2

FRAME_MS = 100
PROGRESS_AFTER_S = 5.0  # files longer than this get a progress bar (on a terminal)
ENCODINGS = ("pcm_s16le", "pcm_f32le", "mulaw", "alaw")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "transcribe",
        help="transcribe a file or raw stdin through the gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="FILE|-", help="an audio file, or - for raw stdin")
    parser.add_argument("--encoding", choices=ENCODINGS, default="pcm_s16le", help="stdin only")
    parser.add_argument("--rate", type=int, default=16000, help="stdin only: samples per second")
    parser.add_argument("--channels", type=int, default=1, choices=(1, 2), help="stdin only")
    parser.add_argument("--model", default="", help="STT model (default: the server's)")
    parser.add_argument("--language", default="", help="BCP-47 tag (default: the model's)")
    parser.add_argument("--realtime", action="store_true", help="send at real time")
    parser.add_argument("--json", action="store_true", help="one JSON event per line")
    parser.add_argument("--no-interim", action="store_true", help="final results only")
    add_connection_arguments(parser)
    parser.set_defaults(run=_run)


@dataclasses.dataclass
class Source:
    """Audio to send: its format and its frames; ``seconds`` None when not known (stdin)."""

    encoding: str
    rate: int
    channels: int
    seconds: float | None
    chunks: AsyncIterator[bytes]


def _run(args: argparse.Namespace) -> int:
    key = api_key(args, "transcribe")
    if key is None:
        return 2
    try:
        return asyncio.run(_transcribe(args, key))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # every failure becomes one line and exit status 1
        return fail("transcribe", exc)


async def _transcribe(args: argparse.Namespace, key: str) -> int:
    from rich.console import Console

    from voxwire.client import TranscriptionSession

    source = await (_stdin(args) if args.source == "-" else _file(Path(args.source)))
    console = Console(stderr=False, highlight=False)
    session = await TranscriptionSession.connect(urls(args), _config(args, source), api_key=key)
    async with session:
        printer = asyncio.create_task(_print(session.events(), console, args, source))
        try:
            await _send(session, source, args.realtime)
            await session.close()
        except BaseException:
            await session.abort()  # ends the event stream, so the printer ends too
            raise
        finally:
            await printer
    return 0


def _config(args: argparse.Namespace, source: Source) -> transcription_pb2.TranscriptionConfig:
    from voxwire.v1 import audio_pb2, transcription_pb2

    encoding = audio_pb2.AudioEncoding.Value(f"AUDIO_ENCODING_{source.encoding.upper()}")
    return transcription_pb2.TranscriptionConfig(
        model=args.model,
        language=args.language,
        audio_format=audio_pb2.AudioFormat(
            encoding=encoding, sample_rate_hz=source.rate, channels=source.channels
        ),
        interim_results=not args.no_interim,
        word_timestamps=args.json,
    )


async def _send(session: Any, source: Source, realtime: bool) -> None:
    due = time.monotonic()
    async for chunk in source.chunks:
        if realtime:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            due += FRAME_MS / 1000
        await session.send(chunk)


# -- sources -------------------------------------------------------------------------------------


async def _file(path: Path) -> Source:
    """Raises soundfile's error (LibsndfileError) for a file it cannot read."""
    import soundfile

    info = await asyncio.to_thread(soundfile.info, str(path))
    channels = info.channels if info.channels <= 2 else 1
    block = info.samplerate * FRAME_MS // 1000

    async def chunks() -> AsyncIterator[bytes]:
        handle = await asyncio.to_thread(soundfile.SoundFile, str(path))
        try:
            while True:
                # About a second per read: few thread hops, little memory.
                data = await asyncio.to_thread(handle.read, block * 10, "int16", True)
                if not len(data):
                    return
                if info.channels > 2:
                    data = data.mean(axis=1).astype("int16")
                raw = data.tobytes()
                step = block * 2 * channels
                for pos in range(0, len(raw), step):
                    yield raw[pos : pos + step]
        finally:
            await asyncio.to_thread(handle.close)

    seconds = info.frames / info.samplerate if info.frames > 0 else None
    return Source("pcm_s16le", info.samplerate, channels, seconds, chunks())


async def _stdin(args: argparse.Namespace) -> Source:
    width = {"pcm_s16le": 2, "pcm_f32le": 4}.get(args.encoding, 1) * args.channels
    step = args.rate * FRAME_MS // 1000 * width
    read = await _stdin_reader(step)

    async def chunks() -> AsyncIterator[bytes]:
        pending = b""
        while True:
            data = await read()
            if not data:
                break
            pending += data
            whole = len(pending) - len(pending) % width
            if whole:
                yield pending[:whole]
                pending = pending[whole:]
        if pending:
            raise ValueError(f"stdin ended inside a frame ({len(pending)} stray bytes)")

    return Source(args.encoding, args.rate, args.channels, None, chunks())


async def _stdin_reader(size: int) -> Callable[[], Awaitable[bytes]]:
    """Reads of stdin without blocking the loop: a pipe through the loop, a file redirected to
    stdin (which the loop cannot watch) in a worker thread."""
    if stat.S_ISREG(os.fstat(sys.stdin.fileno()).st_mode):
        return lambda: asyncio.to_thread(sys.stdin.buffer.read, size)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=size * 4)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    return lambda: reader.read(size)


# -- output --------------------------------------------------------------------------------------


async def _print(
    events: AsyncIterator[TranscriptionEvent],
    console: Console,
    args: argparse.Namespace,
    source: Source,
) -> None:
    if args.json:
        async for event in events:
            print(_json_line(event), flush=True)
        return
    from rich.live import Live
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table
    from rich.text import Text

    from voxwire.client import Resumed
    from voxwire.v1 import transcription_pb2

    if not console.is_terminal:
        async for event in events:
            if isinstance(event, transcription_pb2.TranscriptResult) and event.is_final:
                print(event.transcript, flush=True)
        return
    progress = Progress(TextColumn("audio"), BarColumn(), TimeRemainingColumn(), console=console)
    task = None
    if source.seconds is not None and source.seconds > PROGRESS_AFTER_S:
        task = progress.add_task("audio", total=source.seconds * 1000)
    interim = Text("", style="dim")
    view = Table.grid()
    view.add_row(interim)
    if task is not None:
        view.add_row(progress)
    with Live(view, console=console, refresh_per_second=10, transient=True):
        async for event in events:
            if isinstance(event, transcription_pb2.TranscriptResult):
                if event.is_final:
                    interim.plain = ""
                    console.print(event.transcript)
                else:
                    interim.plain = event.transcript
                if task is not None:
                    progress.update(task, completed=event.end_ms)
            elif isinstance(event, Resumed):
                console.print(f"[yellow]resumed on {event.url} ({event.cause})[/yellow]")


def _json_line(event: TranscriptionEvent) -> str:
    from voxwire.client import Resumed
    from voxwire.edge.messages import encode
    from voxwire.edge.v1 import session_pb2, stt_pb2
    from voxwire.v1 import stream_pb2, transcription_pb2

    if isinstance(event, Resumed):
        return json.dumps({"resumed": dataclasses.asdict(event)})
    msg = stt_pb2.SttServerMessage()
    field = {
        transcription_pb2.TranscriptionStarted: "started",
        transcription_pb2.TranscriptResult: "result",
        transcription_pb2.SpeechStarted: "speech_started",
        transcription_pb2.UtteranceEnd: "utterance_end",
        transcription_pb2.FinalizeAck: "finalize_ack",
        transcription_pb2.UpdateConfigAck: "update_config_ack",
        stream_pb2.StreamNotice: "notice",
        session_pb2.SessionSummary: "summary",
    }[type(event)]
    getattr(msg, field).CopyFrom(event)
    return encode(msg)
