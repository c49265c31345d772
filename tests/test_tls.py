"""``kingpost serve --ssl-certfile/--ssl-keyfile``: HTTPS with a certificate from a test CA."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from pathlib import Path

import anthropic
import httpx
import openai
import trustme

from kingpost.scaffold import create_model_dir
from kingpost.testing import ServerProcess

try:  # the anthropic SDK's own HTTP library since its 2.x releases
    import httpx2 as anthropic_http
except ImportError:
    anthropic_http = httpx  # type: ignore[no-redef]


def test_the_server_speaks_https_to_httpx_and_both_sdks(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    certificate.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    certificate.private_key_pem.write_to_path(str(key_file))
    context = ssl.create_default_context()
    authority.configure_trust(context)
    model_dir = tmp_path / "model_dir"
    create_model_dir(model_dir, openai=True)
    server = start_server(
        model_dir, "--ssl-certfile", str(cert_file), "--ssl-keyfile", str(key_file), verify=context
    )
    assert server.base_url.startswith("https://")
    with httpx.Client(verify=context) as client:
        assert client.post(server.url("/predict"), json={"prompt": "a"}).json()["output"]
    with httpx.Client(verify=True) as untrusting:
        try:
            untrusting.get(server.url("/"))
            raise AssertionError("a certificate from an unknown CA was accepted")
        except httpx.ConnectError:
            pass
    plain = server.base_url.replace("https://", "http://")
    with httpx.Client() as client:
        try:
            reply = client.get(plain + "/")
            assert reply.status_code == 400  # plain HTTP on the TLS port is refused, not served
        except httpx.TransportError:
            pass
    with httpx.Client(verify=context) as http:
        sdk = openai.OpenAI(base_url=server.url("/v1"), api_key="unused", http_client=http)
        messages = [{"role": "user", "content": "tls"}]
        reply = sdk.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
        assert "tls" in (reply.choices[0].message.content or "")
    with anthropic_http.Client(verify=context) as http2:
        claude = anthropic.Anthropic(base_url=server.base_url, api_key="unused", http_client=http2)
        message = claude.messages.create(
            model="m", max_tokens=16, messages=[{"role": "user", "content": "tls"}]
        )
        assert message.content
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 10
