"""TLS at the edge (wss://, https://, the gRPC front) and mTLS from the gateway to an adapter.

Certificates are made for each run by trustme (a throwaway CA; nothing that is a private key
is committed): a server certificate for 127.0.0.1, a client certificate for the gateway, and a
client certificate from another CA that the adapter must refuse.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
import pytest_asyncio
import trustme

from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from inference_adapter.config import AdapterConfig
from inference_adapter.server import AdapterServer
from localstack.client import collect, write_all
from localstack.triton import TritonServer
from tests.gateway.conftest import Edge
from tests.helpers.front import bearer, stt_config
from tests.helpers.speech_fixtures import SPEECH_DIR
from tests.helpers.wavio import read_wav
from voxwire.v1 import (
    capabilities_pb2,
    capabilities_pb2_grpc,
    transcription_pb2,
    transcription_pb2_grpc,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

QUERY = "model=stt_pocketsphinx&encoding=pcm_s16le&sample_rate=16000"


def pieces(audio: bytes, size: int = 3200) -> list[bytes]:
    """100 ms pieces of 16 kHz PCM16."""
    return [audio[i : i + size] for i in range(0, len(audio), size)]


class Pki:
    """A CA and PEM files of certificates it issued, in a temporary directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca = trustme.CA()
        self.ca_pem = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_pem))

    def issue(self, name: str, *identities: str) -> tuple[str, str]:
        """(certificate chain file, key file) of a certificate for ``identities``."""
        leaf = self.ca.issue_cert(*identities)
        cert, key = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        for i, blob in enumerate(leaf.cert_chain_pems):
            blob.write_to_path(str(cert), append=i > 0)
        leaf.private_key_pem.write_to_path(str(key))
        return str(cert), str(key)

    def client_ssl(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest_asyncio.fixture(loop_scope="session")
async def tls_gateway(
    pki: Pki, edge: Edge, edge_adapter: AdapterServer
) -> AsyncIterator[GatewayServer]:
    cert, key = pki.issue("edge", "127.0.0.1", "localhost")
    server = GatewayServer(
        GatewayConfig(
            listen="127.0.0.1:0",
            grpc_listen="127.0.0.1:0",
            adapters=(edge_adapter.address,),
            auth=edge.auth,
            tls_cert=cert,
            tls_key=key,
        )
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=1.0)


async def test_websocket_and_http_over_tls(tls_gateway: GatewayServer, pki: Pki, edge: Edge):
    assert tls_gateway.url.startswith("https://")
    pcm, _ = read_wav(SPEECH_DIR / "call_me_back.wav")
    connector = aiohttp.TCPConnector(ssl=pki.client_ssl())
    async with aiohttp.ClientSession(connector=connector) as http:
        wss = tls_gateway.url.replace("https", "wss", 1)
        async with http.ws_connect(f"{wss}/v1/stt/stream?{QUERY}", headers=edge.headers) as ws:
            for chunk in pieces(pcm.tobytes()):
                await ws.send_bytes(chunk)
            await ws.send_str(json.dumps({"close": {}}))
            messages = [json.loads(m.data) async for m in ws if m.type is aiohttp.WSMsgType.TEXT]
        assert ws.close_code == 1000 and "summary" in messages[-1]
        finals = [m["result"]["transcript"] for m in messages if m.get("result", {}).get("isFinal")]
        assert "tomorrow" in " ".join(finals)
        url = f"{tls_gateway.url}/v1/tts?model=tts_espeak&sample_rate=16000"
        async with http.post(url, data="Call me back.", headers=edge.headers) as resp:
            assert resp.status == 200 and len(await resp.read()) > 16000
    # The port speaks only TLS: a plain HTTP request gets no answer.
    async with aiohttp.ClientSession() as http:
        plain = tls_gateway.url.replace("https", "http", 1)
        with pytest.raises(aiohttp.ClientError):
            async with http.get(f"{plain}/readyz", timeout=aiohttp.ClientTimeout(total=5)):
                pass


async def test_the_grpc_front_over_tls(tls_gateway: GatewayServer, pki: Pki, edge: Edge):
    credentials = grpc.ssl_channel_credentials(pki.ca.cert_pem.bytes())
    async with grpc.aio.secure_channel(tls_gateway.grpc_address, credentials) as channel:
        reply = await capabilities_pb2_grpc.CapabilitiesStub(channel).GetCapabilities(
            capabilities_pb2.GetCapabilitiesRequest(), metadata=bearer(edge.key), timeout=10
        )
        assert "stt_pocketsphinx" in {m.name for m in reply.models}
        call = transcription_pb2_grpc.TranscriptionStub(channel).StreamingTranscribe(
            metadata=bearer(edge.key), timeout=30
        )
        pcm, _ = read_wav(SPEECH_DIR / "call_me_back.wav")
        await write_all(
            call,
            [
                transcription_pb2.StreamingTranscribeRequest(config=stt_config()),
                *(
                    transcription_pb2.StreamingTranscribeRequest(audio=chunk)
                    for chunk in pieces(pcm.tobytes())
                ),
            ],
        )
        outcome = await collect(call)
    assert outcome.code == grpc.StatusCode.OK
    assert "tomorrow" in " ".join(r.result.transcript for r in outcome.responses)
    # Without TLS the front does not answer.
    async with grpc.aio.insecure_channel(tls_gateway.grpc_address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await capabilities_pb2_grpc.CapabilitiesStub(channel).GetCapabilities(
                capabilities_pb2.GetCapabilitiesRequest(), metadata=bearer(edge.key), timeout=5
            )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest_asyncio.fixture(loop_scope="session")
async def mtls_adapter(pki: Pki, triton: TritonServer) -> AsyncIterator[AdapterServer]:
    cert, key = pki.issue("adapter", "127.0.0.1")
    server = AdapterServer(
        AdapterConfig(
            listen="127.0.0.1:0",
            triton_urls=(triton.grpc_url,),
            tls_cert=cert,
            tls_key=key,
            tls_client_ca=str(pki.ca_pem),
            health_timeout_seconds=1.0,
        )
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=1.0)


def gateway_to(adapter: AdapterServer, edge: Edge, **tls: str) -> GatewayServer:
    return GatewayServer(
        GatewayConfig(
            listen="127.0.0.1:0",
            grpc_listen="",
            adapters=(adapter.address,),
            auth=edge.auth,
            startup_wait_seconds=3.0,
            **tls,
        )
    )


async def test_a_gateway_with_the_client_certificate_uses_an_mtls_adapter(
    mtls_adapter: AdapterServer, pki: Pki, edge: Edge
):
    cert, key = pki.issue("gateway", "gateway.voxwire.test")
    server = gateway_to(
        mtls_adapter, edge, adapter_ca=str(pki.ca_pem), adapter_cert=cert, adapter_key=key
    )
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            url = f"{server.url}/v1/tts?model=tts_espeak&sample_rate=16000"
            async with http.post(url, data="Call me back.", headers=edge.headers) as resp:
                assert resp.status == 200 and len(await resp.read()) > 16000
    finally:
        await server.stop(grace=1.0)


@pytest.mark.parametrize("client_cert", ["none", "other-ca"])
async def test_a_gateway_without_an_accepted_client_certificate_is_refused(
    mtls_adapter: AdapterServer, pki: Pki, edge: Edge, tmp_path: Path, client_cert: str
):
    tls = {"adapter_ca": str(pki.ca_pem)}
    if client_cert == "other-ca":
        cert, key = Pki(tmp_path).issue("stranger", "gateway.voxwire.test")
        tls |= {"adapter_cert": cert, "adapter_key": key}
    server = gateway_to(mtls_adapter, edge, **tls)
    with pytest.raises(RuntimeError, match="served within") as failed:
        await server.start()  # the handshake fails: the adapter never serves this gateway
    # With gRPC's own words for why: the error said nothing else of a TLS mistake.
    assert f"last: {mtls_adapter.address}: UNAVAILABLE: " in str(failed.value), failed.value
    # The same with a plain gRPC client: the TLS handshake is refused, no call is made.
    credentials = grpc.ssl_channel_credentials(pki.ca.cert_pem.bytes())
    async with grpc.aio.secure_channel(mtls_adapter.address, credentials) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await capabilities_pb2_grpc.CapabilitiesStub(channel).GetCapabilities(
                capabilities_pb2.GetCapabilitiesRequest(), timeout=5
            )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
