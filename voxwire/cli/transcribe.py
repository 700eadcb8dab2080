"""``voxwire transcribe FILE|-``: stream a file (WAV, FLAC, OGG, MP3) or stdin to the gateway.

Audio goes out in 100 ms frames, at real time with ``--realtime`` (as a live source would) or
as fast as the gateway takes it (the SDK's replay window and TCP pace it). On a terminal,
interim results update one line and final results are printed as lines, with a progress bar
for files longer than a few seconds; otherwise (a pipe) only final results are printed, one per
line. ``--json`` prints every event as one JSON object per line, in the wire's schema
(``{"result": {...}}``, ``{"summary": {...}}``; the SDK's own ``{"resumed": {...}}``).

Files are read with libsndfile (the soundfile wheel) in a worker thread, a block at a time, and
sent as 16-bit PCM at their own rate, or resampled to one the contract carries (float files
scaled, more than two channels mixed down to mono). Raw stdin, or a file of raw samples (no
header: a ``.raw`` or ``.pcm`` name, or any file libsndfile does not recognise; never a WebM or
MP4 file, which it cannot read), needs its format: ``--encoding`` and ``--rate``; a WAV stream
on stdin brings its own (16-bit PCM, 32-bit float, mu-law or A-law), and so does a file: format
flags given with either must agree with it (a usage error otherwise, before anything is
sent). stdin may be a pipe, a file or /dev/null.

The request fits the model, as the gateway's ``/v1/capabilities`` describe it (asked first, for
at most 2 s of the connect timeout): interim results are asked for only when the model makes
them, and audio in a format the model does not take (a server that does not resample, 16 kHz
PCM16 mono only) is converted to the nearest one it does (resampled, mixed down to mono,
G.711 decoded), with a line on stderr saying so.

A first connect that reaches no gateway is given up on after ``--connect-timeout`` seconds
(default 10; refused connections within 6 s). Errors are one line on stderr: exit
status 2 for a command line that is wrong, 1 for anything else.

Ctrl-C (SIGINT) stops the audio where it is, and the transcript of what was sent is finished
and printed (the session's close: the last words become a final result), within
``STOP_GRACE_S``; a second Ctrl-C quits at once. Either way the exit status is 130. A live
source (``arecord ... | voxwire transcribe -``) stopped with Ctrl-C so keeps its last sentence.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxwire.cli.common import (
    add_connection_arguments,
    api_key,
    closed_stream,
    fail,
    positive_hz,
    urls,
)
from voxwire.cli.source import FRAME_MS, SAMPLE_BYTES, Source

if TYPE_CHECKING:
    from rich.console import Console

    from voxwire.client import SessionOptions, TranscriptionEvent, TranscriptionSession
    from voxwire.v1 import audio_pb2, transcription_pb2
    from voxwire.v1.capabilities_pb2 import ModelCapabilities

PROGRESS_AFTER_S = 5.0  # files longer than this get a progress bar (on a terminal)
# After a Ctrl-C, how long the transcript of the audio sent may take to finish: the model
# catches up with audio sent ahead of it (as fast as allowed: up to the replay window's 30 s).
STOP_GRACE_S = 15.0
_INTERRUPTED = 130  # the shell's status for a command ended by SIGINT
ENCODINGS = tuple(SAMPLE_BYTES)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "transcribe",
        help="transcribe a file or raw stdin through the gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="FILE|-", help="an audio file, or - for stdin")
    parser.add_argument(
        "--encoding", choices=ENCODINGS, help="raw stdin or file: the sample encoding (required)"
    )
    parser.add_argument(
        "--rate",
        type=positive_hz,
        metavar="HZ",
        help="raw stdin or file: samples per second (required)",
    )
    parser.add_argument(
        "--channels", type=int, choices=(1, 2), help="raw stdin or file: channels (default 1)"
    )
    parser.add_argument("--model", default="", help="STT model (default: the server's)")
    parser.add_argument("--language", default="", help="BCP-47 tag (default: the model's)")
    parser.add_argument("--realtime", action="store_true", help="send at real time")
    parser.add_argument("--json", action="store_true", help="one JSON event per line")
    parser.add_argument(
        "--no-interim",
        action="store_true",
        help="final results only (default: interim results too, when the model makes them)",
    )
    add_connection_arguments(parser)
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    closed = closed_stream("transcribe", stdin=args.source == "-", stdout=True)
    if closed is not None:
        return closed
    key = api_key(args, "transcribe")
    if key is None:
        return 2
    try:
        return asyncio.run(_transcribe(args, key))
    except (KeyboardInterrupt, asyncio.CancelledError):  # a second Ctrl-C
        return _INTERRUPTED
    except Exception as exc:  # every failure becomes one line and a non-zero status
        return fail("transcribe", exc)


async def _transcribe(args: argparse.Namespace, key: str) -> int:
    from voxwire.cli.audio_file import open_file
    from voxwire.cli.connect import connect
    from voxwire.cli.model_info import model_capabilities
    from voxwire.cli.stdin_source import open_stdin
    from voxwire.client import TranscriptionSession

    # The source first: a path or a format that is wrong fails before any connection.
    source = await (open_stdin(args) if args.source == "-" else open_file(Path(args.source), args))
    stop = _stop_on_sigint()
    try:
        # What the gateway says of the model (None: nothing): the request fits it.
        asked_at = time.monotonic()
        model = await model_capabilities(args, key, "stt", args.model)
        source = _fit_format(source, model)
        config = _config(args, source)
        if model is not None and not model.features.interim_results:
            # Asked of a model that makes none, the session was refused (INVALID_CONFIG)
            # where it could transcribe.
            config.interim_results = False

        def open_session(options: SessionOptions) -> Awaitable[TranscriptionSession]:
            return TranscriptionSession.connect(urls(args), config, api_key=key, options=options)

        session = await connect(open_session, args, time.monotonic() - asked_at)
        sent = await _run_session(session, source, args, stop)
    finally:
        await source.close()
    if stop.is_set():
        return _INTERRUPTED
    stopped = source.stopped_early()
    if stopped is not None:
        print(f"voxwire transcribe: error: {stopped}", file=sys.stderr)
        return 1
    if not sent:
        print(f"voxwire transcribe: {source.name} held no audio", file=sys.stderr)
    return 0


def _fit_format(source: Source, model: ModelCapabilities | None) -> Source:
    """``source`` converted when the model does not take its format, to the nearest one it
    does (a server that does not resample, 16 kHz PCM16 mono only: a 44.1 kHz file was refused
    UNSUPPORTED_SAMPLE_RATE, and the flag its error named, --rate, is refused with a file; a
    stereo file and 8 kHz G.711 on stdin were refused too). Nearest: the audio's own encoding
    if offered, else PCM16, else the first offered; of its rates, the one the gateway's
    uploads go at (``carried_rate``); the audio's channels, or as many as the model takes."""
    from voxwire.audio.codecs import Encoding
    from voxwire.audio.formats import ENCODINGS, PROTO_ENCODINGS
    from voxwire.capabilities import fitted_input, most_channels
    from voxwire.cli.source import converted

    fit = fitted_input(
        model, PROTO_ENCODINGS[Encoding(source.encoding)], source.rate, source.channels
    )
    if model is None or fit is None:
        return source
    target = converted(source, ENCODINGS[fit.encoding].value, fit.sample_rate_hz, fit.channels)
    takes = "; ".join(
        f"{_wire_name(f.encoding)} at {', '.join(map(str, sorted(f.sample_rates_hz)))} Hz, "
        f"{most_channels(f)} channel(s)"
        for f in model.input_formats
    )
    print(
        f"voxwire transcribe: {source.name} is {_described(source)}; model {model.name} takes "
        f"{takes}: sent as {_described(target)}",
        file=sys.stderr,
    )
    return target


def _wire_name(encoding: audio_pb2.AudioEncoding.ValueType) -> str:
    """The CLI's name of a wire encoding (``--encoding``), else the contract's."""
    from voxwire.audio.formats import ENCODINGS
    from voxwire.v1 import audio_pb2

    known = ENCODINGS.get(encoding)
    return known.value if known is not None else audio_pb2.AudioEncoding.Name(encoding)


def _described(source: Source) -> str:
    return f"{source.encoding} at {source.rate} Hz, {source.channels} channel(s)"


def _stop_on_sigint() -> asyncio.Event:
    """Set by the first SIGINT (the audio stops, the transcript is finished); the second
    cancels the command's task (asyncio.run's own handler would at the first)."""
    stop = asyncio.Event()
    main = asyncio.current_task()

    def interrupted() -> None:
        if stop.is_set():
            if main is not None:
                main.cancel()
            return
        stop.set()
        print(
            "voxwire transcribe: stopping; the transcript of the audio sent follows "
            "(Ctrl-C again to quit)",
            file=sys.stderr,
            flush=True,
        )

    with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals here: no matter
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, interrupted)
    return stop


async def _run_session(
    session: TranscriptionSession, source: Source, args: argparse.Namespace, stop: asyncio.Event
) -> int:
    """Send the source, print the events; returns the bytes of audio sent."""
    from rich.console import Console

    console = Console(stderr=False, highlight=False)
    async with session:
        printer = asyncio.create_task(_print(session.events(), console, args, source))
        try:
            sent = await _send(session, source, args.realtime, stop)
            if stop.is_set():
                try:
                    async with asyncio.timeout(STOP_GRACE_S):
                        await session.close()
                except TimeoutError:
                    print(
                        f"voxwire transcribe: the transcript did not finish within "
                        f"{STOP_GRACE_S:g} s of the stop",
                        file=sys.stderr,
                    )
                    await session.abort()
            else:
                await session.close()
        except BaseException:
            await session.abort()  # ends the event stream, so the printer ends too
            raise
        finally:
            await printer
    return sent


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


async def _send(session: Any, source: Source, realtime: bool, stop: asyncio.Event) -> int:
    due = time.monotonic()
    sent = 0
    async for chunk in _until(source.chunks, stop):
        if realtime:
            delay = due - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await stop.wait()
            due += FRAME_MS / 1000
        if stop.is_set():
            break
        await session.send(chunk)
        sent += len(chunk)
    return sent


async def _until(chunks: AsyncIterator[bytes], stop: asyncio.Event) -> AsyncIterator[bytes]:
    """The chunks until ``stop``, which does not wait for the next one: a source that gives
    nothing for a while (a pipe whose writer stalls) held Ctrl-C until its next bytes came, and
    the stop grace only began then (35 s for a 35 s stall)."""
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while True:
            following = asyncio.ensure_future(anext(chunks, None))
            await asyncio.wait({following, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                following.cancel()  # the source's read; the source is closed after
                await asyncio.wait({following}, timeout=1.0)
                return
            chunk = following.result()
            if chunk is None:
                return
            yield chunk
    finally:
        stopped.cancel()


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
    from voxwire.v1 import stream_pb2, transcription_pb2

    suspect = stream_pb2.StreamNotice.KIND_FORMAT_SUSPECT

    def warn(notice: stream_pb2.StreamNotice) -> None:
        # Audio that does not sound like its declared format (--encoding, --rate): on stderr,
        # so a pipe of transcripts stays clean.
        print(f"voxwire: warning: {notice.message}", file=sys.stderr, flush=True)

    if not console.is_terminal:
        async for event in events:
            if isinstance(event, transcription_pb2.TranscriptResult) and event.is_final:
                print(event.transcript, flush=True)
            elif isinstance(event, stream_pb2.StreamNotice) and event.kind == suspect:
                warn(event)
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
                    # Text, never rich markup: "[laughter]" or "[inaudible]" in a transcript
                    # was taken for a style and dropped, and "[/x]" raised a MarkupError.
                    console.print(event.transcript, markup=False, highlight=False)
                else:
                    interim.plain = event.transcript
                if task is not None:
                    progress.update(task, completed=event.end_ms)
            elif isinstance(event, Resumed):
                said = f"resumed on {event.url} ({event.cause})"
                console.print(said, style="yellow", markup=False, highlight=False)
            elif isinstance(event, stream_pb2.StreamNotice) and event.kind == suspect:
                warn(event)


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
