"""The gateway's one auth call: Bearer keys, browser tokens in the subprotocol, origins."""

from __future__ import annotations

import pytest

from gateway.auth.authenticate import (
    SUBPROTOCOL,
    Authenticator,
    offered_subprotocols,
    select_subprotocol,
)
from gateway.auth.keys import revoke_key
from gateway.auth.limits import KeyLimits, SessionLimiter
from gateway.auth.tokens import BrowserTokens
from tests.gateway.auth.conftest import KeysFixture
from tests.gateway.auth.helpers import APP, DEFAULTS, ManualClock, signer
from voxwire.errors import InvalidConfig, PermissionDenied, RateLimited, Unauthenticated

EVIL = "https://evil.example"


class Setup:
    def __init__(self, keys: KeysFixture) -> None:
        self.keys = keys
        self.store = keys.store()
        self.clock = ManualClock()
        self.tokens = BrowserTokens(signer(), default_ttl_s=60, max_ttl_s=120)
        self.auth = Authenticator(self.store, self.tokens, wall_clock=self.clock)

    def token(self, key: str, origin: str | None = None) -> str:
        """What POST /v1/auth/token answers to a server holding ``key``."""
        headers = {"Authorization": f"Bearer {key}"}
        if origin is not None:
            headers["Origin"] = origin
        principal = self.auth.authenticate_request(headers)
        return self.auth.issue_browser_token(principal).token


@pytest.fixture
def setup(keys: KeysFixture) -> Setup:
    return Setup(keys)


@pytest.mark.parametrize(
    "shape",
    ["dict", "upper", "asgi-bytes", "grpc-metadata", "lower-scheme"],
)
def test_a_bearer_key_in_any_header_shape(setup: Setup, shape: str):
    key = setup.keys.browser_key
    headers = {
        "dict": {"Authorization": f"Bearer {key}"},
        "upper": {"AUTHORIZATION": f"Bearer   {key}"},
        "asgi-bytes": [(b"host", b"x"), (b"authorization", f"Bearer {key}".encode())],
        "grpc-metadata": (("authorization", f"Bearer {key}"), ("x-request-id", "1")),
        "lower-scheme": {"authorization": f"bearer {key}"},
    }[shape]
    principal = setup.auth.authenticate_request(headers)
    assert principal.key_id == setup.keys.browser.key_id and principal.name == "web"
    assert principal.limits == KeyLimits(2, 4)
    assert principal.credential == "api_key" and principal.origin is None


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "no credentials"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "malformed"),
        ({"Authorization": "Bearer"}, "malformed"),
        ({"Authorization": "Bearer a b"}, "malformed"),
        ({"Authorization": "Bearer " + "x" * 2000}, "malformed"),
        ([("authorization", "Bearer a"), ("Authorization", "Bearer b")], "more than one"),
        ({"Authorization": "Bearer vx_abcdefghij_" + "A" * 43}, "unknown API key"),
        ({"Authorization": "Bearer sk-not-ours"}, "malformed API key"),
    ],
)
def test_bad_credentials_are_unauthenticated(setup: Setup, headers, why: str):
    with pytest.raises(Unauthenticated, match=why) as refused:
        setup.auth.authenticate_request(headers)
    assert refused.value.http_status == 401 and refused.value.ws_close_code == 4001


def test_a_revoked_key_is_unauthenticated_after_the_reload(setup: Setup):
    headers = {"Authorization": f"Bearer {setup.keys.server_key}"}
    setup.auth.authenticate_request(headers)
    revoke_key(setup.keys.path, setup.keys.server.key_id)
    setup.store.reload_if_changed()
    with pytest.raises(Unauthenticated, match="revoked"):
        setup.auth.authenticate_request(headers)


def test_a_bearer_key_from_a_browser_origin_must_be_allowed(setup: Setup):
    browser = {"Authorization": f"Bearer {setup.keys.browser_key}"}
    assert setup.auth.authenticate_request(browser | {"Origin": APP}).origin == APP
    with pytest.raises(PermissionDenied, match="not allowed") as refused:
        setup.auth.authenticate_request(browser | {"Origin": EVIL})
    assert refused.value.http_status == 403 and refused.value.ws_close_code == 4003
    server = {"Authorization": f"Bearer {setup.keys.server_key}"}
    with pytest.raises(PermissionDenied):  # a key with no origins: servers only
        setup.auth.authenticate_request(server | {"Origin": APP})
    with pytest.raises(PermissionDenied, match="more than one Origin"):
        setup.auth.authenticate_request([*browser.items(), ("origin", APP), ("origin", EVIL)])


def test_a_browser_session_with_a_token_echoes_voxwire_v1(setup: Setup):
    token = setup.token(setup.keys.browser_key)  # asked for by the page's server: no Origin
    offer = [SUBPROTOCOL, f"voxwire.token.{token}"]
    result = setup.auth.authenticate_websocket({"Origin": APP}, offer)
    assert result.subprotocol == SUBPROTOCOL
    assert result.principal.credential == "browser_token"
    assert result.principal.key_id == setup.keys.browser.key_id
    assert result.principal.limits == KeyLimits(2, 4)
    with pytest.raises(Unauthenticated, match="already used"):
        setup.auth.authenticate_websocket({"Origin": APP}, offer)


def test_the_offer_is_read_from_the_headers_when_not_given(setup: Setup):
    token = setup.token(setup.keys.browser_key)
    headers = [
        (b"origin", APP.encode()),
        (b"sec-websocket-protocol", f"{SUBPROTOCOL}, voxwire.token.{token}".encode()),
    ]
    assert offered_subprotocols(headers) == [SUBPROTOCOL, f"voxwire.token.{token}"]
    result = setup.auth.authenticate_websocket(headers)
    assert result.subprotocol == SUBPROTOCOL and result.principal.credential == "browser_token"


def test_a_browser_token_needs_an_allowed_origin(setup: Setup):
    def offer(token: str) -> list[str]:
        return [SUBPROTOCOL, f"voxwire.token.{token}"]

    with pytest.raises(PermissionDenied, match="needs the Origin"):
        setup.auth.authenticate_websocket({}, offer(setup.token(setup.keys.browser_key)))
    with pytest.raises(PermissionDenied, match="not allowed"):
        setup.auth.authenticate_websocket(
            {"Origin": EVIL}, offer(setup.token(setup.keys.browser_key))
        )
    # A server-only key's token is refused on every origin.
    with pytest.raises(PermissionDenied, match="not allowed"):
        setup.auth.authenticate_websocket(
            {"Origin": APP}, offer(setup.token(setup.keys.server_key))
        )
    # A token asked for from the page (Origin sent) is bound to that origin.
    bound = setup.token(setup.keys.browser_key, origin=APP)
    assert setup.auth.authenticate_websocket({"Origin": APP}, offer(bound)).principal.origin == APP


def test_an_expired_or_revoked_token_is_unauthenticated(setup: Setup):
    def offer(token: str) -> list[str]:
        return [SUBPROTOCOL, f"voxwire.token.{token}"]

    expiring = setup.token(setup.keys.browser_key)
    setup.clock.advance(60)
    with pytest.raises(Unauthenticated, match="expired"):
        setup.auth.authenticate_websocket({"Origin": APP}, offer(expiring))
    revoked = setup.token(setup.keys.browser_key)
    revoke_key(setup.keys.path, setup.keys.browser.key_id)
    setup.store.reload_if_changed()
    with pytest.raises(Unauthenticated, match="revoked"):
        setup.auth.authenticate_websocket({"Origin": APP}, offer(revoked))


@pytest.mark.parametrize(
    "case", ["both", "two-tokens", "no-voxwire-v1", "nothing", "other-protocol-only"]
)
def test_ambiguous_or_missing_websocket_credentials(setup: Setup, case: str):
    token = setup.token(setup.keys.browser_key)
    bearer = {"Origin": APP, "Authorization": f"Bearer {setup.keys.browser_key}"}
    headers, offer = {
        "both": (bearer, [SUBPROTOCOL, f"voxwire.token.{token}"]),
        "two-tokens": ({"Origin": APP}, [SUBPROTOCOL, f"voxwire.token.{token}", "voxwire.token.x"]),
        "no-voxwire-v1": ({"Origin": APP}, [f"voxwire.token.{token}"]),
        "nothing": ({"Origin": APP}, []),
        "other-protocol-only": ({"Origin": APP}, ["graphql-ws"]),
    }[case]
    with pytest.raises(Unauthenticated):
        setup.auth.authenticate_websocket(headers, offer)
    assert select_subprotocol(offer) == (SUBPROTOCOL if SUBPROTOCOL in offer else None)


def test_a_server_websocket_uses_bearer_and_never_echoes_a_token(setup: Setup):
    headers = {"Authorization": f"Bearer {setup.keys.server_key}"}
    assert setup.auth.authenticate_websocket(headers, []).subprotocol is None
    result = setup.auth.authenticate_websocket(headers, [SUBPROTOCOL])
    assert result.subprotocol == SUBPROTOCOL and result.principal.credential == "api_key"


def test_tokens_are_issued_for_keys_only(setup: Setup):
    token = setup.token(setup.keys.browser_key)
    via_token = setup.auth.authenticate_websocket(
        {"Origin": APP}, [SUBPROTOCOL, f"voxwire.token.{token}"]
    ).principal
    with pytest.raises(PermissionDenied, match="only for an API key"):
        setup.auth.issue_browser_token(via_token)
    principal = setup.auth.authenticate_request(
        {"Authorization": f"Bearer {setup.keys.browser_key}"}
    )
    with pytest.raises(InvalidConfig):
        setup.auth.issue_browser_token(principal, ttl_s=121)
    issued = setup.auth.issue_browser_token(principal, ttl_s=120)
    assert issued.expires_at == int(setup.clock.now) + 120


def test_the_principal_carries_the_limits_the_limiter_enforces(setup: Setup):
    limiter = SessionLimiter(clock=ManualClock())
    server = setup.auth.authenticate_request({"Authorization": f"Bearer {setup.keys.server_key}"})
    assert server.limits == DEFAULTS  # no limits in its entry
    permits = [limiter.admit(server.key_id, server.limits) for _ in range(3)]
    with pytest.raises(RateLimited):
        limiter.admit(server.key_id, server.limits)
    for permit in permits:
        permit.release()
