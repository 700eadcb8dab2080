"""Keys and tokens never reach a log: redact() and the RedactingFilter on a real handler."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from gateway.auth.keys import generate_key
from gateway.auth.redaction import REDACTED, RedactingFilter, install_redaction, redact
from gateway.auth.tokens import BrowserTokens, ResumeTokens
from tests.gateway.auth.helpers import APP, signer

KEY_ID, KEY = generate_key()
SECRET = KEY.split("_", 2)[2]
BROWSER = BrowserTokens(signer()).issue(KEY_ID, origin=APP, now=1e9).token
RESUME = (
    ResumeTokens(signer())
    .issue(session_id="s", key_id=KEY_ID, kind="stt", config=b"\x08\x01" * 20, now=1e9, ttl_s=60)
    .token
)
SECRETS = (SECRET, BROWSER, RESUME, BROWSER.split(".")[1], RESUME.split(".")[0])


def clean(text: str) -> bool:
    return not any(s in text for s in SECRETS)


@pytest.mark.parametrize(
    "text",
    [
        f"auth ok for {KEY}",
        f"headers: {{'authorization': 'Bearer {KEY}'}}",
        f"AUTHORIZATION: bearer {KEY}",
        f"Sec-WebSocket-Protocol: voxwire.v1, voxwire.token.{BROWSER}",
        f'{{"start":{{"resume":{{"resumeToken":"{RESUME}"}}}}}}',
        f"GET /v1/stt/stream?model=x&token={BROWSER}&api_key={KEY} HTTP/1.1",
        f"resume token {RESUME} rejected",
        f"key=vx_{KEY_ID}{SECRET}",  # a key with its separator lost
        f"x-api-key: {SECRET}",
        f"api_key={SECRET}",
    ],
)
def test_redact_removes_every_credential(text: str):
    out = redact(text)
    assert clean(out), out
    assert REDACTED in out
    assert redact(out) == out  # idempotent: the filter relies on it


def test_the_key_id_stays_and_prose_survives():
    assert redact(f"auth ok for {KEY}") == f"auth ok for vx_{KEY_ID}_{REDACTED}"
    assert redact(f"Bearer {KEY}") == f"Bearer vx_{KEY_ID}_{REDACTED}"
    assert redact(f"Bearer {BROWSER}") == f"Bearer {REDACTED}"
    for prose in (
        "a bearer token is required",
        f"API key {KEY_ID} is revoked",
        "model=stt_pocketsphinx sample_rate=16000",
        "GET /v1/stt/stream?model=x&language=en HTTP/1.1",
    ):
        assert redact(prose) == prose


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s %(peer)s"))
    parent = logging.getLogger("test_redaction")
    parent.propagate = False
    parent.setLevel(logging.DEBUG)
    parent.addHandler(handler)
    installed = install_redaction(parent)
    assert installed in handler.filters
    try:
        yield logging.getLogger("test_redaction.child"), stream
    finally:
        parent.removeHandler(handler)


def test_a_real_handler_writes_no_credential(captured):
    log, stream = captured
    peer = {"peer": "127.0.0.1"}
    log.info("key %s", KEY, extra=peer)
    log.info("headers %s", {"Authorization": f"Bearer {KEY}"}, extra=peer)
    log.warning("offer %r", ["voxwire.v1", f"voxwire.token.{BROWSER}"], extra=peer)
    log.info("split %s_%s", f"vx_{KEY_ID}", SECRET, extra=peer)
    log.info("resume %(token)s", {"token": RESUME}, extra=peer)
    log.info("extra field", extra={"peer": f"Bearer {KEY}"})
    try:
        raise ValueError(f"bad credentials {KEY}")
    except ValueError:
        log.exception("failed", extra=peer)
    log.info("stack", stack_info=True, extra={"peer": RESUME})
    text = stream.getvalue()
    assert clean(text), text
    assert text.count(" test_redaction.child ") == 8  # nothing was dropped
    assert f"Bearer vx_{KEY_ID}_{REDACTED}" in text and "ValueError: bad credentials" in text


def test_formatters_that_read_args_keep_working():
    # uvicorn's access formatter unpacks record.args: the filter keeps its shape and types.
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/v1/stt/stream?token={BROWSER}", "1.1", 101),
        None,
    )
    assert RedactingFilter().filter(record)
    assert isinstance(record.args, tuple) and len(record.args) == 5
    client, method, path, version, status = record.args
    assert status == 101 and method == "GET" and path == f"/v1/stt/stream?token={REDACTED}"
    assert clean(record.getMessage())
