"""Signing webhook bodies, two ways at once.

- The hosted platform's: ``X-BASETEN-SIGNATURE: v1=<hex HMAC-SHA256 of the body>``,
  keyed with the secret's UTF-8 bytes; one ``v1=`` entry per secret (comma
  separated) while secrets rotate.
- Standard Webhooks (standardwebhooks.com): ``webhook-id``, ``webhook-timestamp``
  and ``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``,
  one entry per secret (space separated). A ``whsec_<base64>`` secret is keyed
  with its decoded bytes, as the Standard Webhooks libraries do; any other secret
  with its UTF-8 bytes (verify with ``Webhook(secret.encode())``).

    signer = WebhookSigner(["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
    headers = signer.headers(body, "msg_abc", timestamp=1700000000)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from collections.abc import Sequence
from pathlib import Path

from kingpost.errors import ConfigError

SECRET_ENV = "KINGPOST_WEBHOOK_SECRET"
_WHSEC = "whsec_"


def standard_key(secret: str) -> bytes:
    """The HMAC key Standard Webhooks libraries derive from a secret string."""
    if secret.startswith(_WHSEC):
        encoded = secret[len(_WHSEC) :]
        try:
            return base64.b64decode(encoded + "==", validate=False)
        except binascii.Error:
            raise ConfigError(f"webhook secret {_WHSEC}... is not valid base64") from None
    return secret.encode()


class WebhookSigner:
    """Signs a body with every configured secret (the first is the current one)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self.secrets = [s for s in secrets if s]
        self._platform_keys = [s.encode() for s in self.secrets]
        self._standard_keys = [standard_key(s) for s in self.secrets]

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def platform_signature(self, body: bytes) -> str:
        """``v1=<hex>,v1=<hex>``: the ``X-BASETEN-SIGNATURE`` value."""
        return ",".join(
            "v1=" + hmac.new(key, body, hashlib.sha256).hexdigest() for key in self._platform_keys
        )

    def standard_signature(self, body: bytes, message_id: str, timestamp: int) -> str:
        """``v1,<base64> v1,<base64>``: the ``webhook-signature`` value."""
        signed = f"{message_id}.{timestamp}.".encode() + body
        return " ".join(
            "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
            for key in self._standard_keys
        )

    def headers(self, body: bytes, message_id: str, timestamp: int | None = None) -> dict[str, str]:
        """Every header a delivery carries (``webhook-id`` and the time even when unsigned)."""
        stamp = int(time.time()) if timestamp is None else timestamp
        headers = {"webhook-id": message_id, "webhook-timestamp": str(stamp)}
        if self.secrets:
            headers["webhook-signature"] = self.standard_signature(body, message_id, stamp)
            headers["x-baseten-signature"] = self.platform_signature(body)
        return headers


def load_secrets(configured: Sequence[str], secret_file: str | None) -> list[str]:
    """Secrets from config, then ``$KINGPOST_WEBHOOK_SECRET``, then the secret file.

    Several in the environment variable are comma separated; in the file one a line.
    """
    secrets = [s.strip() for s in configured if s.strip()]
    secrets += [s.strip() for s in os.environ.get(SECRET_ENV, "").split(",") if s.strip()]
    if secret_file:
        path = Path(secret_file).expanduser()
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(
                f"async_queue.webhook_secret_file: cannot read {path}: {exc}"
            ) from None
        secrets += [line.strip() for line in text.splitlines() if line.strip()]
    for secret in secrets:
        standard_key(secret)  # a malformed whsec_ secret is refused at start, not per request
    return list(dict.fromkeys(secrets))
