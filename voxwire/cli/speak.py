"""``voxwire speak "TEXT" -o out.wav``: synthesize text through the gateway into an audio file.

The text (or stdin with ``-``, sent as it comes: a program writing text as it goes, an LLM's
output, is heard from its first sentence; an SSML document is read whole first and sent whole,
up to the model's limit on a unit; plain text of any length: a book goes in pieces as it is
spoken, ``SynthesisContext.append``) goes to one TTS context,
spoken as fast as the model goes (lead 0); the audio is written as 16-bit PCM WAV at
``--rate``, or in the format the output's name asks for (``.flac``, ``.ogg``, ``.opus``,
``.mp3``, ``.au``, ``.aiff``, ``.caf``, ``.raw``: voxwire.cli.wav_output). On a terminal a
progress line shows the audio received while it arrives. Word timings go to stderr with ``--words``.
Without ``--rate`` the rate is 22050 Hz (24000 for ``.opus``) where the model offers it (the
gateway's ``/v1/capabilities``, asked first for at most 2 s of the connect timeout), else one it
offers, its native rate first. A ``--rate`` the model does not make (a server that does not
resample, 16 kHz only) is asked of it at the nearest it does and resampled here, with a line on
stderr saying so.

Text that starts with ``<speak`` (or an XML declaration) is sent as SSML, in the model's subset
(``ssmlElements`` in the gateway's ``/v1/capabilities``; markup outside it fails with
``SSML_INVALID``, it is never read out); ``--format text`` speaks it as written, ``--format
ssml`` insists on SSML.

``-o -`` writes the WAV to stdout (``voxwire speak "Hi." -o - | aplay``). The output is
opened before anything is synthesized (a path that cannot be written fails at once). A pipe
or a device gets the audio as it arrives, behind a WAV header whose sizes are unknown (the
reader reads to the end), at the pace the reader takes it; a regular file is written when the
audio is complete, with its length in the header, and a synthesis that fails leaves an existing
file as it was. Meanwhile the audio waits in a temporary file: memory stays flat however long
the text. A first connect that reaches no gateway is given up on after ``--connect-timeout``
seconds (default 10; refused connections within 6 s).
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import contextlib
import os
import sys
import threading
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxwire.cli.audio_spool import AudioSpool
from voxwire.cli.common import (
    CliError,
    add_connection_arguments,
    api_key,
    closed_stream,
    fail,
    urls,
)
from voxwire.cli.wav_output import WavOutput, default_rate
from voxwire.ssml import looks_like_ssml

if TYPE_CHECKING:
    from voxwire.v1.capabilities_pb2 import ModelCapabilities

RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
FORMATS = ("auto", "text", "ssml")


def is_ssml(text: str, choice: str) -> bool:
    """Whether ``text`` goes as SSML: markup read out as words ("less than speak greater than")
    is never what the writer of a ``<speak>`` document meant."""
    if choice != "auto":
        return choice == "ssml"
    return looks_like_ssml(text)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "speak",
        help="synthesize text into an audio file through the gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("text", metavar="TEXT|-", help="the text, or - to read it from stdin")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="the file to write (WAV; .flac, .ogg, .opus, .mp3, .au, .aiff, .caf, .raw by its "
        "name); - for WAV on stdout",
    )
    parser.add_argument("--model", default="", help="TTS model (default: the server's)")
    parser.add_argument("--voice", default="", help="voice (default: the model's)")
    parser.add_argument(
        "--rate",
        type=int,
        default=None,
        choices=RATES,
        help="output sample rate (Hz; default 22050, 24000 for .opus, where the model offers "
        "it, else the model's own)",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="plain text or an SSML document (default auto: SSML when the text starts with "
        "<speak or <?xml)",
    )
    parser.add_argument("--words", action="store_true", help="print word timings on stderr")
    add_connection_arguments(parser)
    parser.set_defaults(run=_run, model_rate=None)


class _Stdin:
    """stdin as text, read as it comes (``os.read``: what a pipe holds now, not a buffer's
    worth), in a worker thread so that the event loop never waits on it."""

    def __init__(self) -> None:
        # utf-8-sig: a byte order mark (Windows editors save one) is no text. Before it, a BOM
        # in front of "<speak>" hid the document, and its markup was read out.
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self.ended = False

    def read_now(self) -> str:
        """Blocks until some text or the end (then ""). Raises CliError: not UTF-8."""
        while not self.ended:
            data = os.read(sys.stdin.fileno(), _STDIN_BLOCK)
            self.ended = not data
            try:
                text = self._decoder.decode(data, final=self.ended)
            except UnicodeDecodeError as exc:
                raise CliError(f"stdin is not UTF-8 text: {exc.reason}") from None
            if text or self.ended:
                return text
        return ""

    def read_start(self) -> str:
        """Text up to its first non-space character (or all of it, to the end)."""
        text = ""
        while not text.strip() and not self.ended:
            text += self.read_now()
        return text

    def read_rest(self) -> str:
        parts = []
        while not self.ended:
            parts.append(self.read_now())
        return "".join(parts)


_STDIN_BLOCK = 65536


def _run(args: argparse.Namespace) -> int:
    closed = closed_stream("speak", stdin=args.text == "-", stdout=str(args.output) == "-")
    if closed is not None:
        return closed
    key = api_key(args, "speak")
    if key is None:
        return 2
    stdin: _Stdin | None = None
    if args.text == "-":
        # Text is spoken as it comes (a program writing it as it goes, an LLM's output), so
        # only its start is waited for here: whether there is any, and whether it is SSML (a
        # document goes whole: it is only complete at its end).
        stdin = _Stdin()
        try:
            text = stdin.read_start()
        except CliError as exc:
            return fail("speak", exc)
    else:
        text = args.text
    if not text.strip():
        print("voxwire speak: error: no text to speak", file=sys.stderr)
        return 2
    if stdin is not None and is_ssml(text, args.format):
        try:
            text += stdin.read_rest()
        except CliError as exc:
            return fail("speak", exc)
        stdin = None
    args.spent_s = 0.0  # of the connect timeout, asking the gateway's capabilities
    try:
        if args.rate is None:
            args.rate = args.model_rate = _fitting_rate(args, key)
        output = WavOutput.open(args.output, args.rate)
        if args.model_rate is None:  # --rate given: asked after what can fail here alone
            args.model_rate = _model_rate(args, key)
    except CliError as exc:
        return fail("speak", exc)
    except KeyboardInterrupt:
        return 130
    try:
        spool = AudioSpool()
    except CliError as exc:
        output.discard()
        return fail("speak", exc)
    writer: threading.Thread | None = None
    try:
        if output.streams:
            writer = threading.Thread(
                target=spool.stream_to,
                args=(output.start_stream(args.rate), output.name),
                name="voxwire-speak-output",
                daemon=True,  # a reader that stopped reading must not keep the process
            )
            writer.start()
        asyncio.run(_speak(args, key, text, spool, stdin))
        # After the loop: no blocking call on it.
        if writer is None:
            output.write(spool.blocks(), spool.size, args.rate)
        else:
            writer.join()  # as long as the reader takes (a player: the audio's duration)
            spool.check_sink()
            output.end_stream()
    except KeyboardInterrupt:
        _give_up(output, spool, writer)
        return 130
    except Exception as exc:  # every failure becomes one line and exit status 1
        _give_up(output, spool, writer)
        return fail("speak", exc)
    spool.close()
    print(f"wrote {output.name} ({spool.size / (2 * args.rate):.2f} s)", file=sys.stderr)
    return 0


async def _append_stdin(context: Any, stdin: _Stdin) -> None:
    """The rest of stdin appended to ``context`` as it comes, then its close; if it cannot
    be (stdin not UTF-8, the session failed), the context is cancelled, so that its events end.

    stdin is read by a daemon thread of its own, not the loop's executor: a read waits as long
    as the writer does (the session's keepalives hold it meanwhile), and a command that ends
    for another reason must not wait for it (``asyncio.run`` joins its executor's threads)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | Exception | None] = asyncio.Queue()

    def give(item: str | Exception | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: the command is over
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def read() -> None:
        try:
            while text := stdin.read_now():
                give(text)
            give(None)
        except Exception as exc:  # CliError (not UTF-8), OSError: the command's error
            give(exc)

    threading.Thread(target=read, name="voxwire-speak-stdin", daemon=True).start()
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, Exception):
                raise item
            await context.append(item)
        await context.close()
    except Exception:
        with contextlib.suppress(Exception):
            await context.cancel()
        raise


def _give_up(output: WavOutput, spool: AudioSpool, writer: threading.Thread | None) -> None:
    spool.abort()
    if writer is not None:
        writer.join(1.0)
        if writer.is_alive():
            return  # blocked on a reader that reads no more: the exit ends it
    output.discard()
    spool.close()


# The rates Opus codes (RFC 6716, 2): an .opus output must be at one of them.
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def _tts_model(args: argparse.Namespace, key: str) -> ModelCapabilities | None:
    """What the gateway's capabilities say of the model (None: nothing), the time it took
    counted against the connect timeout (``args.spent_s``)."""
    from voxwire.cli.model_info import model_capabilities

    asked_at = time.monotonic()
    model = asyncio.run(model_capabilities(args, key, "tts", args.model))
    args.spent_s = time.monotonic() - asked_at
    return model


def _model_rate(args: argparse.Namespace, key: str) -> int:
    """The rate asked of the model for an output at ``--rate``: that rate where the model
    makes it (or nothing is known of it), else the nearest it makes (``carried_rate``),
    resampled here to ``--rate`` (``_speak``). A server that does not resample (16 kHz only)
    refused `--rate 8000`, so a telephony file could not be had from it."""
    from voxwire.audio.formats import carried_rate
    from voxwire.capabilities import rates_of
    from voxwire.v1 import audio_pb2

    model = _tts_model(args, key)
    rates = rates_of(model.output_formats, audio_pb2.AUDIO_ENCODING_PCM_S16LE) if model else ()
    if model is None or not rates or args.rate in rates:
        return int(args.rate)
    rate = carried_rate(args.rate, rates)
    print(
        f"voxwire speak: model {model.name} makes {', '.join(map(str, rates))} Hz: "
        f"{rate} Hz resampled to {args.rate} Hz",
        file=sys.stderr,
    )
    return rate


def _fitting_rate(args: argparse.Namespace, key: str) -> int:
    """The output's default rate (``default_rate``) where the model offers it, else one it
    offers (its native rate first), as the gateway's capabilities describe the model: a
    server that does not resample (16 kHz only) refused the default with
    UNSUPPORTED_SAMPLE_RATE. The default when they cannot be had."""
    from voxwire.audio.formats import offered_rate
    from voxwire.v1 import audio_pb2

    model = _tts_model(args, key)
    opus = args.output.suffix.lower() == ".opus"
    return offered_rate(
        model,
        audio_pb2.AUDIO_ENCODING_PCM_S16LE,
        default_rate(args.output),
        _OPUS_RATES if opus else (),
    )


async def _speak(
    args: argparse.Namespace, key: str, text: str, spool: AudioSpool, stdin: _Stdin | None
) -> None:
    """Synthesizes the text (and the rest of ``stdin``'s) into ``spool`` (16-bit PCM at
    ``args.rate``)."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from voxwire.cli.connect import connect
    from voxwire.client import SessionOptions, SynthesisSession, SynthesizedAudio
    from voxwire.v1 import audio_pb2, synthesis_pb2

    ssml = is_ssml(text, args.format)  # read whole already when it is (_run)
    config = synthesis_pb2.SynthesisContextConfig(
        model=args.model,
        voice=args.voice,
        word_timestamps=args.words,
        text_format=synthesis_pb2.TEXT_FORMAT_SSML if ssml else synthesis_pb2.TEXT_FORMAT_PLAIN,
        output_format=audio_pb2.AudioFormat(
            encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=args.model_rate
        ),
    )
    converter = None
    if args.model_rate != args.rate:
        from voxwire.audio.codecs import Encoding, PcmFormat
        from voxwire.audio.convert import FormatConverter

        converter = FormatConverter(
            PcmFormat(Encoding.PCM_S16LE, args.model_rate), PcmFormat(Encoding.PCM_S16LE, args.rate)
        )
    console = Console(stderr=True)

    def open_session(options: SessionOptions) -> Awaitable[SynthesisSession]:
        return SynthesisSession.connect(urls(args), api_key=key, lead_ms=0, options=options)

    session = await connect(open_session, args, args.spent_s)
    async with session:
        context = await session.open("speak", config)
        await context.append(text)
        feeding = None
        if stdin is None:
            await context.close()
        else:
            feeding = asyncio.create_task(_append_stdin(context, stdin))
        try:
            with Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                console=console,
                transient=True,
                # Off the terminal (a log, a pipe) a spinner has nothing to show, and rich would
                # still leave its last line behind, empty.
                disable=not console.is_terminal,
            ) as progress:
                task = progress.add_task("waiting for audio", total=None)
                async for event in context:
                    if isinstance(event, SynthesizedAudio):
                        await spool.add(
                            event.audio if converter is None else converter.convert(event.audio)
                        )
                        seconds = (event.start_ms + event.duration_ms) / 1000
                        progress.update(task, description=f"{seconds:.1f} s of audio")
                    elif isinstance(event, synthesis_pb2.WordTimestamps):
                        for word in event.words:
                            print(
                                f"{word.start_ms:>7} {word.end_ms:>7}  {word.word}", file=sys.stderr
                            )
            if converter is not None:
                await spool.add(converter.flush())  # what the resampler held back
            if feeding is not None:
                await feeding  # ended with the context: its error, if any, is the command's
        finally:
            if feeding is not None and not feeding.done():  # the context failed first
                feeding.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await feeding
        await session.close()
    await spool.finish()
