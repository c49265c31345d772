"""``kingpost up``: loopback unless told otherwise, no open bind without a key, and HTTPS."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
import trustme

from kingpost.auth import KeySpec
from kingpost.cli import build_parser
from kingpost.platform.access import PlatformKeys
from kingpost.platform.keystore import PlatformKeyStore
from kingpost.platform.settings import PlatformOptions
from kingpost.platform.store import StateStore
from kingpost.platform.up import open_bind_refusal
from kingpost.scaffold import create_model_dir
from kingpost.testing import free_port
from tests.platform.conftest import ENV, PlatformProcess

try:  # the anthropic SDK's own HTTP library since its 2.x releases
    import httpx2 as anthropic_http
except ImportError:
    anthropic_http = httpx  # type: ignore[no-redef]

OPERATOR = "kp-test-operator-key-for-up-0123"


def test_up_binds_loopback_by_default() -> None:
    assert build_parser().parse_args(["up"]).host == "127.0.0.1"
    assert PlatformOptions().host == "127.0.0.1"


def test_up_refuses_a_non_loopback_host_without_any_key(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "kingpost", "up", "--home", str(tmp_path / "home")]
    env = {k: v for k, v in ENV.items() if k != "KINGPOST_API_KEYS"}
    result = subprocess.run(
        [*command, "--host", "0.0.0.0", "--port", str(free_port())],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0 without an API key" in result.stderr
    assert "--insecure-no-keys" in result.stderr and "kingpost keys --home" in result.stderr


def test_which_binds_need_a_key(tmp_path: Path) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        keys = PlatformKeys(PlatformKeyStore(store))
        for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
            assert open_bind_refusal(PlatformOptions(host=host), keys) is None
        for host in ("0.0.0.0", "::", "192.0.2.7", "example.internal"):
            assert open_bind_refusal(PlatformOptions(host=host), keys) is not None
        assert (
            open_bind_refusal(PlatformOptions(host="0.0.0.0", insecure_no_keys=True), keys) is None
        )
        _, record = keys.store.create(KeySpec(scopes=frozenset({"admin"})))
        assert open_bind_refusal(PlatformOptions(host="0.0.0.0"), keys) is None
        keys.store.revoke(record.id)  # a revoked key lets no one in: it does not count
        assert open_bind_refusal(PlatformOptions(host="0.0.0.0"), keys) is not None
        operator = PlatformKeys(keys.store, api_keys=[OPERATOR])
        assert open_bind_refusal(PlatformOptions(host="0.0.0.0"), operator) is None
    finally:
        store.close()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path, ssl.SSLContext]:
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    issued.private_key_pem.write_to_path(str(key_file))
    context = ssl.create_default_context()
    authority.configure_trust(context)
    return cert_file, key_file, context


def test_up_speaks_https_to_httpx_and_both_sdks(
    tmp_path: Path, certificate: tuple[Path, Path, ssl.SSLContext]
) -> None:
    cert_file, key_file, context = certificate
    tls = ("--ssl-certfile", str(cert_file), "--ssl-keyfile", str(key_file))
    process = PlatformProcess(
        tmp_path / "home", *tls, "--api-key", OPERATOR, api_key=OPERATOR, verify=context
    )
    try:
        process.start()
        assert process.base_url.startswith("https://")
        model_dir = tmp_path / "model_dir"
        create_model_dir(model_dir, openai=True)
        record = process.admin.deploy(model_dir, "secure", environment="production")
        process.admin.wait_deployed(record["id"], "production", timeout=60)
        predict = process.url("/models/secure/production/predict")
        with httpx.Client(verify=context) as client:
            assert client.post(predict, json={"prompt": "a"}).status_code == 401
            headers = {"authorization": f"Api-Key {OPERATOR}"}
            assert client.post(predict, json={"prompt": "a"}, headers=headers).json()["output"]
        with httpx.Client(verify=True) as untrusting, pytest.raises(httpx.ConnectError):
            untrusting.get(process.url("/"))
        base = process.url("/models/secure/production/sync")
        with httpx.Client(verify=context) as http:
            sdk = openai.OpenAI(base_url=base + "/v1", api_key=OPERATOR, http_client=http)
            reply = sdk.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "tls"}]
            )
            assert "tls" in (reply.choices[0].message.content or "")
        with anthropic_http.Client(verify=context) as http2:
            claude = anthropic.Anthropic(base_url=base, api_key=OPERATOR, http_client=http2)
            message = claude.messages.create(
                model="m", max_tokens=16, messages=[{"role": "user", "content": "tls"}]
            )
            assert message.content
        process.admin.close()
        started = time.monotonic()
        process.stop()
        assert time.monotonic() - started < 10
    finally:
        process.close()


def test_sigterm_stops_up_cleanly_with_exit_code_0(tmp_path: Path) -> None:
    platform = PlatformProcess(tmp_path / "home").start()
    try:
        assert platform.process is not None
        platform.stop()
        assert platform.process.returncode == 0, platform.logs()
    finally:
        platform.close()
