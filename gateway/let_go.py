"""Letting go of a client's connection that the gateway has ended: bounded, whatever the client
does.

A graceful close (asyncio's ``transport.close()``, which aiohttp uses to end a WebSocket or a
cut response) keeps the socket open until what the transport holds is sent, so a client that
stopped reading keeps it, and the megabytes of audio in its socket buffers (3.5 MB measured with
a stalled ``POST /v1/tts`` and a stalled TTS WebSocket), for as long as it keeps the connection
open: after its session ended and its place was given back, so one key could pile them up.
``reset`` sends RST instead (``SO_LINGER`` 0, socket(7)), which frees them at once;
``reset_unless_gone`` does that to a connection still holding unsent data a grace period after
it was ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

_LINGER_0 = struct.pack("ii", 1, 0)  # struct linger {l_onoff = 1, l_linger = 0}


def reset(transport: asyncio.Transport | None) -> None:
    """Reset the connection now, dropping what it has not sent."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # A closed socket refuses the option (OSError): the connection is gone already.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
    transport.abort()


def reset_unless_gone(transport: asyncio.Transport | None, grace_s: float) -> None:
    """Reset the connection if ``grace_s`` from now it still holds data its client has not
    taken (aiohttp drops its own reference to the transport when it closes it, so the
    transport is held here). A transport holds data only while its socket is open (asyncio and
    uvloop close the socket once their buffer is empty, and empty it when they abort), so a
    connection that has gone is left alone."""
    if transport is not None:
        asyncio.get_running_loop().call_later(grace_s, _reset_if_held, transport)


def _reset_if_held(transport: asyncio.Transport) -> None:
    if transport.get_write_buffer_size():
        reset(transport)


def forget_tracebacks(exc: BaseException | None) -> None:
    """Drop the tracebacks of ``exc`` and the exceptions it chains: aiohttp keeps a connection's
    failure (a client that vanished: ClientConnectionResetError, from EofStream) on its
    WebSocketResponse, and their tracebacks' frames hold that response, so each such session
    was a reference cycle, its request, protocol and buffers freed only by the garbage
    collector's rare full collection (tests/gateway/test_session_garbage.py)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc.__traceback__ = None
        exc = exc.__cause__ or exc.__context__
