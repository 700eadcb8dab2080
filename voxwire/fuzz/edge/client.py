"""Run one edge fuzz case over aiohttp and record what the server did.

A WebSocket case: the handshake, then the case's steps as fast as the socket takes them, while
a reader keeps every server message until the close (or ``deadline_s``). Sends that fail
because the server already closed are expected (a hostile frame ends the session before the
steps after it) and ignored. An HTTP case: one request (its body at once, or in pieces with
pauses, and left part way when the case says), its status, its body (at most ``_MAX_BODY``
kept) and whether the response ended within the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from voxwire.edge.frames import unpack
from voxwire.fuzz.edge.cases import NO_CONTENT_TYPE, Case

_MAX_BODY = 64 * 1024


@dataclass
class Outcome:
    case: Case
    connected: bool = False  # the upgrade succeeded (HTTP: a response came)
    handshake_status: int = 0  # an HTTP status that refused the upgrade
    closed: bool = False  # the server's close (HTTP: the body's end) came within the deadline
    close_code: int = 0
    # WebSocket: every JSON message, and the binary audio frames as {"_frame": (handle, seq)}.
    messages: list[dict[str, Any]] = field(default_factory=list)
    not_json: int = 0  # text frames from the server that do not parse
    http_status: int = 0
    http_body: bytes = b""
    content_type: str = ""
    seconds: float = 0.0
    client_error: str = ""  # what failed on the client's side (never a verdict by itself)


def _headers(case: Case, key: str) -> dict[str, str]:
    return {
        "key": {"Authorization": f"Bearer {key}"},
        "none": {},
        "wrong": {"Authorization": "Bearer vx_fuzz0000_" + "0" * 40},
        "malformed": {"Authorization": "Basic " + "=" * 30},
        "token": {},
    }[case.auth]


async def run_case(
    http: aiohttp.ClientSession, base: str, key: str, case: Case, deadline_s: float
) -> Outcome:
    outcome = Outcome(case)
    start = time.monotonic()
    try:
        async with asyncio.timeout(deadline_s):
            if case.family == "upgrade_cut":
                await _raw_upgrade(base, key, case, outcome)
            elif case.kind in ("stt", "tts"):
                await _websocket(http, base, key, case, outcome)
            else:
                await _http(http, base, key, case, outcome)
    except TimeoutError:
        outcome.client_error = outcome.client_error or "deadline"
    except (aiohttp.ClientError, OSError) as exc:
        outcome.client_error = f"{type(exc).__name__}: {exc}"[:200]
    outcome.seconds = time.monotonic() - start
    return outcome


async def _websocket(
    http: aiohttp.ClientSession, base: str, key: str, case: Case, outcome: Outcome
) -> None:
    url = f"{base.replace('http', 'ws', 1)}{case.path}" + (f"?{case.query}" if case.query else "")
    try:
        ws = await http.ws_connect(
            url,
            headers=_headers(case, key),
            protocols=case.protocols,
            max_msg_size=16 * 1024 * 1024,
            autoping=True,
            autoclose=False,  # read the server's close ourselves: its code is the verdict
        )
    except aiohttp.WSServerHandshakeError as exc:
        outcome.handshake_status = exc.status
        outcome.closed = True
        return
    outcome.connected = True
    reader = asyncio.create_task(_read(ws, outcome))
    try:
        for step in case.steps:
            if reader.done():
                break
            if not await _send(ws, step):
                break
        await asyncio.shield(reader)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        if not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)


async def _raw_upgrade(base: str, key: str, case: Case, outcome: Outcome) -> None:
    """The upgrade request written raw (``case.body``, maybe cut), then the connection ends
    (``case.content_type``: ``fin`` or ``rst``); the server's answer, if any, is read."""
    host, port = base.split("://", 1)[1].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(case.body.replace(b"{key}", key.encode()))
        if case.content_type == "rst":
            writer.transport.abort()
            return
        writer.write_eof()
        outcome.connected = True
        with contextlib.suppress(ConnectionError):
            outcome.http_body = (await reader.read(_MAX_BODY))[:200]
        outcome.closed = True
    finally:
        writer.close()


async def _send(ws: aiohttp.ClientWebSocketResponse, step: Any) -> bool:
    """One step; False when the client stops here (it dropped or closed the connection)."""
    try:
        if step.op == "text":
            # surrogatepass: a lone surrogate in a case's text goes out as the (invalid) bytes
            # a careless client would send, where send_str would raise.
            text = str(step.data).encode("utf-8", "surrogatepass")
            await ws.send_frame(text, aiohttp.WSMsgType.TEXT)
        elif step.op == "binary":
            await ws.send_bytes(bytes(step.data))
        elif step.op == "raw_text":
            # A text frame whose payload is not UTF-8 (send_str would encode it).
            await ws.send_frame(bytes(step.data), aiohttp.WSMsgType.TEXT)
        elif step.op == "close":
            await ws._writer.close(int(step.data), b"fuzz")  # the close frame only, no wait
            return False
        elif step.op == "drop":
            # aiohttp has no public abort for a client WebSocket: its connection's transport.
            conn = ws._conn
            transport = conn.transport if conn is not None else None
            if transport is not None:
                transport.abort()
            return False
    except (ConnectionError, aiohttp.ClientError, RuntimeError, OSError):
        return False  # the server closed first: expected after a hostile frame
    return True


async def _read(ws: aiohttp.ClientWebSocketResponse, outcome: Outcome) -> None:
    while True:
        msg = await ws.receive()
        if msg.type is aiohttp.WSMsgType.TEXT:
            try:
                outcome.messages.append(json.loads(msg.data))
            except ValueError:
                outcome.not_json += 1
        elif msg.type is aiohttp.WSMsgType.BINARY:
            try:
                frame = unpack(msg.data)
                outcome.messages.append({"_frame": [frame.handle, frame.sequence_number]})
            except ValueError:
                outcome.not_json += 1
        elif msg.type is aiohttp.WSMsgType.CLOSE:
            outcome.closed, outcome.close_code = True, int(msg.data or 0)
            return
        elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            # The connection ended with no close frame from the server (or after ours).
            outcome.close_code = ws.close_code or 0
            return
        elif msg.type is aiohttp.WSMsgType.ERROR:
            outcome.client_error = f"websocket error: {ws.exception()!r}"[:200]
            return


async def _http(
    http: aiohttp.ClientSession, base: str, key: str, case: Case, outcome: Outcome
) -> None:
    headers = _headers(case, key)
    if case.content_type and case.content_type != NO_CONTENT_TYPE:
        headers["Content-Type"] = case.content_type
    if case.accept:
        headers["Accept"] = case.accept
    url = f"{base}{case.path}" + (f"?{case.query}" if case.query else "")
    data: bytes | AsyncIterator[bytes] = case.body
    if case.piece_bytes or case.repeats:
        headers["Content-Length"] = str(case.body_bytes)
        data = _pieces(case)
    expect = case.expect_continue
    untyped = case.content_type == NO_CONTENT_TYPE
    if not case.leave_after_s:
        await _post(http, url, data, headers, outcome, expect, untyped)
        return
    try:
        async with asyncio.timeout(case.leave_after_s):
            await _post(http, url, data, headers, outcome, expect, untyped)
    except TimeoutError:
        # The client leaves: cancelling the request closes its connection (force_close).
        outcome.client_error = f"left after {case.leave_after_s} s"


async def _pieces(case: Case) -> AsyncIterator[bytes]:
    step = case.piece_bytes or len(case.body) or 1
    for pos in range(0, len(case.body), step):
        yield case.body[pos : pos + step]
        if case.pause_s:
            await asyncio.sleep(case.pause_s)
    for _ in range(case.repeats):
        yield case.tail
        if case.pause_s:
            await asyncio.sleep(case.pause_s)


async def _post(
    http: aiohttp.ClientSession,
    url: str,
    data: bytes | AsyncIterator[bytes],
    headers: dict[str, str],
    outcome: Outcome,
    expect_continue: bool,
    untyped: bool = False,
) -> None:
    # Left to itself, aiohttp gives a body with no Content-Type application/octet-stream.
    skip = ("Content-Type",) if untyped else ()
    async with http.post(
        url, data=data, headers=headers, expect100=expect_continue, skip_auto_headers=skip
    ) as response:
        outcome.connected = True
        outcome.http_status = response.status
        outcome.content_type = response.headers.get("Content-Type", "")
        body = bytearray()
        async for chunk in response.content.iter_chunked(16 * 1024):
            if len(body) < _MAX_BODY:
                body += chunk[: _MAX_BODY - len(body)]
        outcome.http_body = bytes(body)
        outcome.closed = True
