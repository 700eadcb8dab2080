"""Browser tokens through the gateway: each API key has its own share of the used-token cache.

A gateway of its own whose keys may each hold 2 used tokens (``browser_token_nonces_per_key``),
in front of the session's adapter. The cache was one bound shared by every key: a key that
redeemed its own tokens by the thousand got every other key's valid token refused.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from gateway.auth.keys import create_key
from gateway.server import GatewayServer
from inference_adapter.server import AdapterServer
from tests.helpers.edge import auth_config, running_gateway
from tests.helpers.edge_clients import Attempt, websocket

pytestmark = pytest.mark.asyncio(loop_scope="session")

APP = "https://app.example"
SHARE = 2


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser-tokens") / "keys.toml"


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def gateway(edge_adapter: AdapterServer, keys_file: Path) -> AsyncIterator[GatewayServer]:
    new_key(keys_file, "placeholder")  # the gateway does not start without a keys file
    auth = replace(auth_config(keys_file), browser_token_nonces_per_key=SHARE)
    async for server in running_gateway(edge_adapter.address, auth):
        yield server


def new_key(keys_file: Path, name: str) -> str:
    key, _ = create_key(
        keys_file, name=name, now=datetime.datetime.now(datetime.UTC), allowed_origins=[APP]
    )
    return key


async def token_of(gateway: GatewayServer, key: str) -> str:
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {key}", "Origin": APP}
        async with http.post(f"{gateway.url}/v1/auth/token", headers=headers) as resp:
            assert resp.status == 200
            return (await resp.json())["token"]


async def browser_session(gateway: GatewayServer, token: str) -> Attempt:
    """A TTS WebSocket opened with ``token`` as a page does (a session without contexts opens
    nothing upstream)."""
    return await websocket(
        gateway.url.replace("http", "ws", 1),
        "/v1/tts/stream",
        headers={"Origin": APP},
        protocols=("voxwire.v1", f"voxwire.token.{token}"),
        first={"start": {}},
    )


async def test_a_key_that_used_up_its_share_does_not_refuse_another_keys_token(
    gateway: GatewayServer, keys_file: Path
):
    noisy, quiet = new_key(keys_file, "noisy"), new_key(keys_file, "quiet")
    gateway.auth.keys.reload_if_changed()
    quiet_token = await token_of(gateway, quiet)  # minted before the noisy key fills its share
    for _ in range(SHARE):
        assert (await browser_session(gateway, await token_of(gateway, noisy))).admitted
    over = await browser_session(gateway, await token_of(gateway, noisy))
    assert (over.admitted, over.reason, over.signal) == (False, "RATE_LIMITED", 1013), over
    # Until the noisy key's first token expires (60 s by default).
    assert over.retry_after_s is not None and 0 < over.retry_after_s <= 60
    assert (await browser_session(gateway, quiet_token)).admitted
    assert (await browser_session(gateway, await token_of(gateway, quiet))).admitted
    # Still single use: the quiet key's first token again is refused.
    again = await browser_session(gateway, quiet_token)
    assert (again.admitted, again.reason) == (False, "UNAUTHENTICATED")
