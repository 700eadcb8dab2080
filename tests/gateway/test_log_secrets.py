"""Keys and tokens never appear in the gateway's logs (docs/design/edge-auth.md, "Logs").

A real gateway process (``python -m gateway``, INFO and DEBUG logging) is driven through every
wire with every kind of credential, the way clients get them right and wrong: API keys in the
Authorization header, in a query string, in a malformed header; browser tokens used, reused,
as a Bearer, in a query string; resume tokens redeemed and forged; a key revoked (the gateway
logs its reload) and used again; the gRPC front with good and bad keys. Then its whole log is
read: no key, no secret part of a key, no browser or resume token, nor the signature of one,
may be in it; and the log must show the refusals and requests it was given (so the test reads
a log that logged)."""

from __future__ import annotations

import asyncio
import datetime
import json
import secrets
from pathlib import Path

import aiohttp
import pytest
import tomli_w

from gateway.auth.keys import create_key, revoke_key
from inference_adapter.server import AdapterServer
from tests.helpers.edge_clients import STT_QUERY, grpc_stt, http_tts, websocket
from tests.helpers.front import bearer
from tests.helpers.gateway_process import GatewayProcess, start_gateway
from tests.helpers.speech_fixtures import SPEECH_DIR
from tests.helpers.wavio import read_wav

pytestmark = pytest.mark.asyncio(loop_scope="session")

APP = "https://app.example"


class Secrets:
    """Everything that must not reach a log, as it is collected along the way."""

    def __init__(self) -> None:
        self.values: list[str] = []

    def key(self, key: str) -> str:
        self.values += [key, key.split("_", 2)[2]]  # the whole key, and its secret part
        return key

    def token(self, token: str) -> str:
        self.values += [token, token.rsplit(".", 1)[1]]  # the token, and its MAC
        return token


def write_config(directory: Path, adapter: str) -> tuple[Path, Path]:
    keys_file = directory / "keys.toml"
    config = directory / "gateway.toml"
    config.write_text(
        tomli_w.dumps(
            {
                "listen": "127.0.0.1:0",
                "grpc_listen": "127.0.0.1:0",
                "adapters": [adapter],
                "drain_grace_seconds": 1.0,
                "auth": {
                    "keys_file": str(keys_file),
                    "token_signing_keys": {"k1": "hex:" + secrets.token_hex(32)},
                    "token_current_kid": "k1",
                    "keys_reload_interval_s": 0.2,
                },
            }
        )
    )
    return config, keys_file


def new_key(keys_file: Path, name: str, found: Secrets, **kwargs: object) -> str:
    key, _ = create_key(
        keys_file,
        name=name,
        now=datetime.datetime.now(datetime.UTC),
        **kwargs,  # type: ignore[arg-type]
    )
    return found.key(key)


async def session_token(ws: aiohttp.ClientWebSocketResponse, found: Secrets) -> str:
    """The resume token of the ``session`` message a socket receives first."""
    message = json.loads((await ws.receive(timeout=10)).data)
    return found.token(message["session"]["resumeToken"])


async def resume(gateway: GatewayProcess, key: str, path: str, start: dict, found: Secrets) -> str:
    """Resume with ``start``; the reason of the refusal, or "" (the new token is collected)."""
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{gateway.ws}{path}", headers=headers) as ws:
            await ws.send_str(json.dumps({"start": start}))
            message = json.loads((await ws.receive(timeout=10)).data)
            if "error" in message:
                return message["error"]["reason"]
            found.token(message["session"]["resumeToken"])
            return ""


async def until_status(base: str, key: str, status: int) -> None:
    """Wait (bounded) until the gateway's own reload of the keys file gives ``key`` this
    status on GET /v1/capabilities (200: known, 401: revoked)."""
    async with aiohttp.ClientSession() as http:
        for _ in range(50):
            url = f"{base}/v1/capabilities"
            async with http.get(url, headers={"Authorization": f"Bearer {key}"}) as resp:
                if resp.status == status:
                    return
            await asyncio.sleep(0.1)
    raise AssertionError(f"the key never got {status}")


async def drive_keys(gateway: GatewayProcess, key: str, found: Secrets) -> None:
    """API keys right, wrong, malformed, in a query string or another header, on every wire."""
    base, ws, front = gateway.http, gateway.ws, gateway.grpc_address
    wrong = found.key(f"vx_{key.split('_')[1]}_{secrets.token_urlsafe(32)}")
    assert (await http_tts(base, {"Authorization": f"Bearer {key}"})).admitted
    assert (await grpc_stt(front, bearer(key))).admitted
    refused = [await grpc_stt(front, bearer(wrong)), await grpc_stt(front, (("x-api-key", key),))]
    for headers in ({"Authorization": f"Bearer {wrong}"}, {"Authorization": f"Basic {key}"}):
        refused.append(await http_tts(base, headers))
        refused.append(await websocket(ws, "/v1/stt/stream", headers=headers, query=STT_QUERY))
    in_query = f"{STT_QUERY}&api_key={key}"
    refused.append(await websocket(ws, "/v1/stt/stream", query=in_query))
    assert {a.reason for a in refused} == {"UNAUTHENTICATED"}, refused
    auth = {"Authorization": f"Bearer {key}"}
    unknown = await websocket(ws, "/v1/stt/stream", headers=auth, query=in_query)
    assert unknown.reason == "INVALID_CONFIG"  # the parameter is named, never its value
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/v1/tts?api_key={key}", data="Hello.") as resp:
            assert resp.status == 401
        async with http.post(f"{base}/v1/tts?api_key={key}", data="Hi.", headers=auth) as resp:
            assert resp.status == 400


async def drive_browser_tokens(gateway: GatewayProcess, key: str, found: Secrets) -> None:
    """A browser token used, reused, as a Bearer, in a query string."""
    async with aiohttp.ClientSession() as http:
        request = {"Authorization": f"Bearer {key}", "Origin": APP}
        async with http.post(f"{gateway.http}/v1/auth/token", headers=request) as resp:
            token = found.token((await resp.json())["token"])
    offer = ("voxwire.v1", f"voxwire.token.{token}")
    origin = {"Origin": APP}
    used = await websocket(
        gateway.ws, "/v1/tts/stream", headers=origin, protocols=offer, first={"start": {}}
    )
    assert used.admitted
    refused = [
        await websocket(gateway.ws, "/v1/tts/stream", headers=origin, protocols=offer),
        await http_tts(gateway.http, {"Authorization": f"Bearer {token}"}),
        await websocket(gateway.ws, "/v1/stt/stream", query=f"{STT_QUERY}&token={token}"),
        await grpc_stt(gateway.grpc_address, bearer(token)),
    ]
    assert {a.reason for a in refused} == {"UNAUTHENTICATED"}, refused


async def drive_resume_tokens(gateway: GatewayProcess, key: str, found: Secrets) -> None:
    """Resume tokens redeemed (STT, TTS), forged, and of the other kind."""
    pcm, _ = read_wav(SPEECH_DIR / "call_me_back.wav")
    auth = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as http:
        url = f"{gateway.ws}/v1/stt/stream?{STT_QUERY}"
        async with http.ws_connect(url, headers=auth) as ws:
            stt_token = await session_token(ws, found)
            for i in range(0, 32000, 3200):
                await ws.send_bytes(pcm.tobytes()[i : i + 3200])
        async with http.ws_connect(f"{gateway.ws}/v1/tts/stream", headers=auth) as ws:
            await ws.send_str(json.dumps({"start": {}}))
            tts_token = await session_token(ws, found)
    ack = {"finalizedThroughMs": 0, "nextUtteranceIndex": 0}
    forged = stt_token[:-4] + ("AAAA" if not stt_token.endswith("AAAA") else "BBBB")
    outcomes = []
    for path, token in (
        ("/v1/stt/stream", stt_token),
        ("/v1/stt/stream", forged),
        ("/v1/tts/stream", tts_token),
        ("/v1/tts/stream", stt_token),  # a token of the other kind
    ):
        start = {"resumeToken": token, **({"ack": ack} if "stt" in path else {})}
        outcomes.append(await resume(gateway, key, path, {"resume": start}, found))
    assert outcomes == ["", "RESUME_REJECTED", "", "RESUME_REJECTED"]


async def drive_failures_that_log(gateway: GatewayProcess, key: str, found: Secrets) -> None:
    """Credentials where a client should never put them, in fields that failures quote: the
    adapter's error names the model or voice, and the gateway logs the upstream failure."""
    auth = {"Authorization": f"Bearer {key}"}
    query = STT_QUERY.replace("model=stt_pocketsphinx", f"model={key}")
    failed = await websocket(gateway.ws, "/v1/stt/stream", headers=auth, query=query)
    assert failed.admitted  # the session starts; the model name fails upstream
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{gateway.ws}/v1/stt/stream?{query}", headers=auth) as ws:
            await session_token(ws, found)
            error = json.loads((await ws.receive(timeout=10)).data)["error"]
        assert error["reason"] == "UNKNOWN_MODEL"
        async with http.ws_connect(f"{gateway.ws}/v1/tts/stream", headers=auth) as ws:
            await ws.send_str(json.dumps({"start": {}}))
            config = {"model": "tts_espeak", "voice": await session_token(ws, found)}
            await ws.send_str(json.dumps({"contextId": "c1", "open": config}))
            reply = json.loads((await ws.receive(timeout=10)).data)
        assert reply["contextError"]["error"]["reason"] == "INVALID_CONFIG", reply


async def drive_revocation(gateway: GatewayProcess, keys_file: Path, found: Secrets) -> None:
    """A key revoked: the gateway logs the reload; the key is refused on every wire."""
    revoked = new_key(keys_file, "revoked", found)
    await until_status(gateway.http, revoked, 200)
    assert (await http_tts(gateway.http, {"Authorization": f"Bearer {revoked}"})).admitted
    revoke_key(keys_file, revoked.split("_")[1])
    await until_status(gateway.http, revoked, 401)
    refused = [
        await http_tts(gateway.http, {"Authorization": f"Bearer {revoked}"}),
        await grpc_stt(gateway.grpc_address, bearer(revoked)),
        await websocket(
            gateway.ws,
            "/v1/stt/stream",
            headers={"Authorization": f"Bearer {revoked}"},
            query=STT_QUERY,
        ),
    ]
    assert {a.reason for a in refused} == {"UNAUTHENTICATED"}, refused


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
async def test_no_key_or_token_reaches_the_log(
    edge_adapter: AdapterServer, tmp_path: Path, level: str
):
    config, keys_file = write_config(tmp_path, edge_adapter.address)
    create_key(keys_file, name="first", now=datetime.datetime.now(datetime.UTC))
    log_path = tmp_path / "gateway.log"
    gateway = await start_gateway(config, log_path, log_level=level)
    found = Secrets()
    try:
        key = new_key(keys_file, "logged", found, allowed_origins=[APP])
        await until_status(gateway.http, key, 200)  # the gateway's own reload found it
        await drive_keys(gateway, key, found)
        await drive_browser_tokens(gateway, key, found)
        await drive_resume_tokens(gateway, key, found)
        await drive_failures_that_log(gateway, key, found)
        await drive_revocation(gateway, keys_file, found)
    finally:
        await gateway.stop()
    log = log_path.read_text(errors="replace")
    # The log logged: requests, refusals on each wire, the reload.
    for expected in (
        '"POST /v1/tts" 200',
        '"GET /v1/stt/stream" 101',
        "refused /v1/stt/stream: UNAUTHENTICATED",
        "refused /voxwire.v1.Transcription/StreamingTranscribe: UNAUTHENTICATED",
        "keys file reloaded",
        "no stt model named 'vx_",  # the upstream failure quotes the model: a key
    ):
        assert expected in log, expected
    assert found.values and len(found.values) >= 16
    leaked = [value for value in found.values if value in log]
    assert leaked == [], f"{len(leaked)} secrets in the {level} log"
