"""Both webhook signatures, checked by code that is not ours."""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from kingpost.async_queue.signing import WebhookSigner, load_secrets
from kingpost.errors import ConfigError

NEW = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD = "plain-old-secret"
BODY = b'{"request_id":"abc","data":{"y":1}}'


def platform_entries(header: str) -> list[str]:
    return [part.removeprefix("v1=") for part in header.split(",")]


def test_the_platform_signature_is_the_hex_hmac_of_the_body_per_secret() -> None:
    headers = WebhookSigner([NEW, OLD]).headers(BODY, "msg_abc")
    expected = [hmac.new(s.encode(), BODY, hashlib.sha256).hexdigest() for s in (NEW, OLD)]
    assert platform_entries(headers["x-baseten-signature"]) == expected


def test_standard_webhooks_verifies_with_each_secret_during_rotation() -> None:
    headers = WebhookSigner([NEW, OLD]).headers(BODY, "msg_abc")
    assert Webhook(NEW).verify(BODY, headers) == {"request_id": "abc", "data": {"y": 1}}
    assert Webhook(OLD.encode()).verify(BODY, headers)["request_id"] == "abc"


def test_standard_webhooks_refuses_a_changed_body_or_another_secret() -> None:
    headers = WebhookSigner([NEW]).headers(BODY, "msg_abc")
    with pytest.raises(WebhookVerificationError):
        Webhook(NEW).verify(BODY.replace(b"1", b"2"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(b"someone else").verify(BODY, headers)


def test_the_timestamp_is_signed_and_current() -> None:
    headers = WebhookSigner([NEW]).headers(BODY, "msg_abc")
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
    stale = WebhookSigner([NEW]).headers(BODY, "msg_abc", timestamp=int(time.time()) - 3600)
    with pytest.raises(WebhookVerificationError):
        Webhook(NEW).verify(BODY, stale)


def test_without_secrets_only_the_id_and_time_are_sent() -> None:
    headers = WebhookSigner([]).headers(BODY, "msg_abc")
    assert set(headers) == {"webhook-id", "webhook-timestamp"}


def test_secrets_come_from_config_env_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_file = tmp_path / "secrets"
    secret_file.write_text("from-file\n\nsecond-from-file\n")
    monkeypatch.setenv("KINGPOST_WEBHOOK_SECRET", "from-env-1,from-env-2")
    found = load_secrets(["from-config"], str(secret_file))
    assert found == ["from-config", "from-env-1", "from-env-2", "from-file", "second-from-file"]


def test_an_unreadable_secret_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="webhook_secret_file"):
        load_secrets([], str(tmp_path / "missing"))
