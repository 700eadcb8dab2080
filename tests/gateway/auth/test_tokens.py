"""Browser and resume tokens: format, expiry, single use, origin, forgery, domains, rotation."""

from __future__ import annotations

import base64
import json
import re
import string

import pytest

from gateway.auth.tokens import (
    BrowserTokens,
    NonceCache,
    ResumeTokens,
    TokenSigner,
    parse_secret,
)
from tests.gateway.auth.helpers import APP, SECRETS, ManualClock, signer
from voxwire.errors import (
    InvalidConfig,
    PermissionDenied,
    RateLimited,
    ResumeRejected,
    Unauthenticated,
)

# RFC 6455 4.1: a subprotocol is an RFC 2616 token: tchar only, no separators or spaces.
TCHARS = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
NOW = 1_700_000_000.0
B64URL = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"


def claims_of(token: str) -> dict:
    segment = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def test_a_browser_token_is_a_compact_subprotocol_token():
    tokens = BrowserTokens(signer())
    issued = tokens.issue("abcd123456", origin="https://App.Example:443", now=NOW)
    assert TCHARS.fullmatch("voxwire.token." + issued.token)
    assert len(issued.token) < 250
    claims = claims_of(issued.token)
    assert claims["key"] == "abcd123456" and claims["kid"] == "k1"
    assert claims["origin"] == APP  # normalized
    assert issued.expires_at == claims["exp"] == int(NOW) + 60
    assert tokens.redeem(issued.token, origin=APP, now=NOW + 1) == "abcd123456"


def test_a_browser_token_expires():
    tokens = BrowserTokens(signer(), default_ttl_s=60)
    early, late = (tokens.issue("k", origin=APP, now=NOW) for _ in range(2))
    assert tokens.redeem(early.token, origin=APP, now=NOW + 59.9) == "k"
    with pytest.raises(Unauthenticated, match="expired"):
        tokens.redeem(late.token, origin=APP, now=NOW + 60)


def test_a_browser_token_opens_one_session():
    tokens = BrowserTokens(signer())
    issued = tokens.issue("k", origin=APP, now=NOW)
    tokens.redeem(issued.token, origin=APP, now=NOW)
    with pytest.raises(Unauthenticated, match="already used"):
        tokens.redeem(issued.token, origin=APP, now=NOW + 1)


def test_a_browser_token_is_bound_to_its_origin():
    tokens = BrowserTokens(signer())
    issued = tokens.issue("k", origin=APP, now=NOW)
    with pytest.raises(PermissionDenied, match="another origin"):
        tokens.redeem(issued.token, origin="https://evil.example", now=NOW)
    with pytest.raises(PermissionDenied):
        tokens.redeem(issued.token, origin=None, now=NOW)
    with pytest.raises(PermissionDenied):
        tokens.redeem(issued.token, origin="http://app.example", now=NOW)  # another scheme
    assert tokens.redeem(issued.token, origin="HTTPS://app.example:443", now=NOW) == "k"
    unbound = tokens.issue("k", origin=None, now=NOW)  # asked for by a server
    assert tokens.redeem(unbound.token, origin="https://any.example", now=NOW) == "k"
    with pytest.raises(PermissionDenied):
        tokens.issue("k", origin="not an origin", now=NOW)


def test_a_forged_browser_token_is_refused():
    tokens = BrowserTokens(signer())
    token = tokens.issue("victim", origin=APP, now=NOW).token
    segment, mac = token.split(".")
    claims = claims_of(token)
    claims["key"] = "attacker"
    forged_claims = (
        base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode() + "." + mac
    )
    flipped = segment + "." + mac[:5] + ("A" if mac[5] != "A" else "B") + mac[6:]
    # The same bytes, spelled differently: the MAC's last character carries 2 unused bits,
    # so its neighbour in the alphabet decodes alike. (Flipping the ASCII bit instead turned
    # a final "A" into "@", a malformed token, in one run of 16.)
    respelled = segment + "." + mac[:-1] + B64URL[B64URL.index(mac[-1]) ^ 1]
    other_secret = BrowserTokens(signer(secrets={"k1": b"\x09" * 32})).issue(
        "victim", origin=APP, now=NOW
    )
    for bad in (forged_claims, flipped, respelled, other_secret.token):
        with pytest.raises(Unauthenticated, match="signature"):
            tokens.redeem(bad, origin=APP, now=NOW)
    assert tokens.redeem(token, origin=APP, now=NOW) == "victim"  # the real one still works


@pytest.mark.parametrize(
    "bad",
    [
        "",
        ".",
        "abc",
        "a.b.c",
        "%%%.abc",
        "eyJ9.",  # "{}" without a MAC
        base64.urlsafe_b64encode(b"[1,2]").decode().rstrip("=") + "." + "A" * 43,
        base64.urlsafe_b64encode(b'{"kid":"nope"}').decode().rstrip("=") + "." + "A" * 43,
        base64.urlsafe_b64encode(b"[" * 700 + b"]" * 700).decode().rstrip("=") + ".x",
        "A" * 5000,
    ],
)
def test_a_malformed_browser_token_is_refused(bad: str):
    with pytest.raises(Unauthenticated):
        BrowserTokens(signer()).redeem(bad, origin=APP, now=NOW)


def test_token_kinds_never_cross():
    browser, resume = BrowserTokens(signer()), ResumeTokens(signer())
    resume_token = resume.issue(
        session_id="s1", key_id="k", kind="stt", config=b"", now=NOW, ttl_s=3600
    ).token
    with pytest.raises(Unauthenticated, match="signature"):
        browser.redeem(resume_token, origin=APP, now=NOW)
    browser_token = browser.issue("k", origin=APP, now=NOW).token
    with pytest.raises(ResumeRejected, match="signature"):
        resume.verify(browser_token, key_id="k", kind="stt", now=NOW)


def test_browser_token_lifetimes():
    tokens = BrowserTokens(signer(), default_ttl_s=60, max_ttl_s=300)
    assert tokens.issue("k", origin=None, now=NOW, ttl_s=0).expires_at == int(NOW) + 60
    assert tokens.issue("k", origin=None, now=NOW, ttl_s=300).expires_at == int(NOW) + 300
    with pytest.raises(InvalidConfig) as refused:
        tokens.issue("k", origin=None, now=NOW, ttl_s=301)
    assert refused.value.violations[0].field == "ttlSeconds"  # as the JSON body names it
    with pytest.raises(InvalidConfig):
        tokens.issue("k", origin=None, now=NOW, ttl_s=-1)


def test_used_nonces_are_forgotten_when_their_tokens_expire():
    clock = ManualClock(NOW)
    tokens = BrowserTokens(signer(), default_ttl_s=10, max_ttl_s=10)
    for _ in range(20):
        tokens.redeem(tokens.issue("k", origin=None, now=clock()).token, origin=None, now=clock())
    clock.advance(11)
    tokens.redeem(tokens.issue("k", origin=None, now=clock()).token, origin=None, now=clock())
    assert len(tokens._nonces) == 1


def test_a_full_share_rate_limits_its_key_until_its_first_nonce_expires():
    cache = NonceCache(per_key=2)
    assert cache.consume("k", "a", exp=NOW + 30, now=NOW)
    assert cache.consume("k", "b", exp=NOW + 50, now=NOW)
    assert not cache.consume("k", "a", exp=NOW + 30, now=NOW + 1)
    with pytest.raises(RateLimited) as full:
        cache.consume("k", "c", exp=NOW + 60, now=NOW + 10)
    assert full.value.retry_delay is not None and full.value.retry_delay.total_seconds() == 20
    assert cache.consume("k", "c", exp=NOW + 60, now=NOW + 30)  # "a" expired and was dropped


def test_one_key_filling_its_share_leaves_other_keys_tokens_valid():
    # One cache shared by every key: a key that redeemed its own tokens by the thousand got
    # every other key's valid token refused RATE_LIMITED until its nonces expired.
    tokens = BrowserTokens(signer(), nonces_per_key=3)
    for _ in range(3):
        tokens.redeem(tokens.issue("noisy", origin=None, now=NOW).token, origin=None, now=NOW)
    with pytest.raises(RateLimited, match="key noisy"):
        tokens.redeem(tokens.issue("noisy", origin=None, now=NOW).token, origin=None, now=NOW)
    for _ in range(3):
        quiet = tokens.issue("quiet", origin=None, now=NOW).token
        assert tokens.redeem(quiet, origin=None, now=NOW) == "quiet"
    # Replay protection holds for both: no live nonce was forgotten to make room.
    with pytest.raises(Unauthenticated, match="already used"):
        tokens.redeem(quiet, origin=None, now=NOW)
    assert (tokens._nonces.held("noisy"), tokens._nonces.held("quiet")) == (3, 3)


def test_the_same_nonce_under_another_key_is_another_token():
    cache = NonceCache(per_key=4)
    assert cache.consume("k1", "n", exp=NOW + 30, now=NOW)
    assert cache.consume("k2", "n", exp=NOW + 30, now=NOW)
    assert not cache.consume("k2", "n", exp=NOW + 30, now=NOW)


def test_expired_nonces_of_every_key_are_forgotten():
    cache = NonceCache(per_key=8)
    for i, key in enumerate(("a", "b", "c")):
        cache.consume(key, f"n{i}", exp=NOW + 10 + i, now=NOW)
    cache.consume("d", "late", exp=NOW + 100, now=NOW)
    cache.consume("d", "next", exp=NOW + 100, now=NOW + 20)
    assert len(cache) == 2 and [cache.held(k) for k in "abcd"] == [0, 0, 0, 2]
    assert cache._by_key.keys() == {"d"}


def test_a_resume_token_round_trips_its_claims():
    tokens = ResumeTokens(signer())
    config = bytes(range(256)) * 2  # an opaque serialized proto
    issued = tokens.issue(
        session_id="sess-1", key_id="abcd123456", kind="tts", config=config, now=NOW, ttl_s=4000
    )
    assert TCHARS.fullmatch(issued.token)
    claims = tokens.verify(issued.token, key_id="abcd123456", kind="tts", now=NOW + 3999)
    assert claims.session_id == "sess-1" and claims.config == config and claims.kind == "tts"
    assert (claims.issued_at, claims.expires_at) == (int(NOW), int(NOW) + 4000)
    assert issued.expires_at_datetime().timestamp() == claims.expires_at


def test_a_resume_token_carries_the_resumes_so_far():
    tokens = ResumeTokens(signer())
    fresh = tokens.issue(session_id="s", key_id="k", kind="stt", config=b"", now=NOW, ttl_s=60)
    assert "n" not in claims_of(fresh.token)  # a session never resumed: no claim, no bytes
    assert tokens.verify(fresh.token, key_id="k", kind="stt", now=NOW).resumes == 0
    again = tokens.issue(
        session_id="s", key_id="k", kind="stt", config=b"", now=NOW, ttl_s=60, resumes=2
    )
    assert tokens.verify(again.token, key_id="k", kind="stt", now=NOW).resumes == 2


@pytest.mark.parametrize(
    ("key_id", "kind", "at", "why"),
    [
        ("abcd123456", "stt", NOW + 4000, "expired"),
        ("abcd123456", "tts", NOW, "of a stt session, not tts"),
        ("other00000", "stt", NOW, "another API key"),
    ],
)
def test_a_resume_token_is_rejected(key_id: str, kind, at: float, why: str):
    tokens = ResumeTokens(signer())
    token = tokens.issue(
        session_id="s", key_id="abcd123456", kind="stt", config=b"cfg", now=NOW, ttl_s=4000
    ).token
    with pytest.raises(ResumeRejected, match=why) as rejected:
        tokens.verify(token, key_id=key_id, kind=kind, now=at)
    assert rejected.value.ws_close_code == 4011


def test_a_forged_or_malformed_resume_token_is_rejected():
    tokens = ResumeTokens(signer())
    token = tokens.issue(
        session_id="s", key_id="k", kind="stt", config=b"cfg", now=NOW, ttl_s=60
    ).token
    claims = claims_of(token)
    claims["exp"] = int(NOW) + 10**6  # extend its life
    segment = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    for bad in (segment + "." + token.split(".")[1], "", "x.y", token + "x"):
        with pytest.raises(ResumeRejected):
            tokens.verify(bad, key_id="k", kind="stt", now=NOW)


def test_rotation_old_kid_verifies_until_removed():
    old = ResumeTokens(signer("k1")).issue(
        session_id="s", key_id="k", kind="stt", config=b"c", now=NOW, ttl_s=60
    )
    rotated = ResumeTokens(signer("k2"))  # k1 and k2 configured, k2 signs
    assert rotated.verify(old.token, key_id="k", kind="stt", now=NOW).session_id == "s"
    new = rotated.issue(session_id="s", key_id="k", kind="stt", config=b"c", now=NOW, ttl_s=60)
    assert claims_of(new.token)["kid"] == "k2"
    retired = ResumeTokens(signer("k2", secrets={"k2": SECRETS["k2"]}))  # k1 removed
    with pytest.raises(ResumeRejected, match="unknown key"):
        retired.verify(old.token, key_id="k", kind="stt", now=NOW)
    assert retired.verify(new.token, key_id="k", kind="stt", now=NOW).key_id == "k"
    # Browser tokens rotate the same way.
    browser_old = BrowserTokens(signer("k1")).issue("k", origin=None, now=NOW)
    assert BrowserTokens(signer("k2")).redeem(browser_old.token, origin=None, now=NOW) == "k"


def test_a_resume_config_too_large_for_a_token_is_refused_at_issue():
    with pytest.raises(ValueError, match="too large"):
        ResumeTokens(signer()).issue(
            session_id="s", key_id="k", kind="stt", config=b"x" * 20000, now=NOW, ttl_s=60
        )


def test_signing_secrets_from_configuration():
    raw = bytes(range(32))
    assert parse_secret("hex:" + raw.hex()) == raw
    assert parse_secret("base64:" + base64.b64encode(raw).decode()) == raw
    assert parse_secret("base64:" + base64.urlsafe_b64encode(raw).decode().rstrip("=")) == raw
    for bad in (raw.hex(), "hex:" + raw.hex()[:-2], "hex:zz", "base64:!!!!", "rot13:abc"):
        with pytest.raises(ValueError):
            parse_secret(bad)
    with pytest.raises(ValueError, match="current"):
        TokenSigner({"k1": raw}, "k2")
    with pytest.raises(ValueError, match="kid"):
        TokenSigner({"bad kid": raw}, "bad kid")
    signer_ = TokenSigner.from_config({"a": "hex:" + raw.hex()}, "a")
    assert signer_.current_kid == "a"
