"""A client of the admin API; the ``kingpost`` platform commands use nothing else.

Once the platform has keys, calls carry one with the admin scope: ``api_key=``,
else ``$KINGPOST_API_KEY``, as ``Authorization: Bearer``.

client = AdminClient("http://127.0.0.1:8080")
deployment = client.deploy(Path("examples/echo"), model="echo", environment="production")
client.wait_deployed(deployment["id"], "production")
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from kingpost.auth.keys import ApiKey, KeySpec, KeyStoreError, UnknownKeyError
from kingpost.platform import bundle

DEFAULT_PLATFORM = "http://127.0.0.1:8080"
PLATFORM_VARIABLE = "KINGPOST_PLATFORM"
KEY_VARIABLE = "KINGPOST_API_KEY"
API = "/admin/v1"


class AdminError(Exception):
    """The platform answered with an error (the message is its ``error``), or is unreachable."""

    def __init__(self, message: str, status_code: int = 0) -> None:
        super().__init__(message)
        self.status_code = status_code


def platform_url(explicit: str | None) -> str:
    return (explicit or os.environ.get(PLATFORM_VARIABLE) or DEFAULT_PLATFORM).rstrip("/")


class AdminClient:
    def __init__(
        self,
        base_url: str,
        timeout: float = 60.0,
        api_key: str | None = None,
        verify: bool | ssl.SSLContext = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        key = api_key or os.environ.get(KEY_VARIABLE)
        headers = {"authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(
            base_url=self.base_url + API,
            timeout=timeout,
            trust_env=False,
            headers=headers,
            verify=verify,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise AdminError(f"cannot reach the platform at {self.base_url}: {exc}") from None
        if response.is_success:
            return response.json()
        try:
            message = response.json().get("error") or response.text
        except ValueError:
            message = response.text or response.reason_phrase
        raise AdminError(str(message), response.status_code)

    def wait_until_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.status()
                return
            except AdminError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    # -- reading -------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return dict(self._call("GET", "/status"))

    def models(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/models"))

    def model(self, model: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/models/{model}"))

    def deployments(self, model: str | None = None) -> list[dict[str, Any]]:
        params = {"model": model} if model else None
        return list(self._call("GET", "/deployments", params=params))

    def deployment(self, deployment_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/deployments/{deployment_id}"))

    def environments(self, model: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/models/{model}/environments"))

    def environment(self, model: str, name: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/models/{model}/environments/{name}"))

    def logs(self, deployment_id: str, follow: bool = False, tail: int = 200) -> Iterator[bytes]:
        params = {"follow": str(follow).lower(), "tail": str(tail)}
        try:
            with self.http.stream(
                "GET", f"/deployments/{deployment_id}/logs", params=params, timeout=None
            ) as response:
                if not response.is_success:
                    response.read()
                    raise AdminError(response.json().get("error", ""), response.status_code)
                yield from response.iter_raw()
        except httpx.TransportError as exc:
            raise AdminError(f"cannot reach the platform at {self.base_url}: {exc}") from None

    # -- changing ------------------------------------------------------------------

    def create_model(self, name: str) -> dict[str, Any]:
        return dict(self._call("POST", "/models", json={"name": name}))

    def deploy(
        self,
        directory: Path,
        model: str,
        environment: str | None = None,
        promote: bool = False,
        rolling: bool = False,
        dev: bool = False,
    ) -> dict[str, Any]:
        params: dict[str, str] = {"model": model, "source": str(directory.resolve())}
        if environment:
            params["environment"] = environment
        if promote:
            params["promote"] = "true"
        if rolling:
            params["rolling"] = "true"
        if dev:
            params["dev"] = "true"
            content = b""
        else:
            content = bundle.pack(directory)
        headers = {"content-type": "application/gzip"}
        return dict(
            self._call("POST", "/deployments", params=params, content=content, headers=headers)
        )

    def promote(
        self,
        deployment_id: str,
        environment: str,
        rolling: bool = False,
        scale_down_previous: bool = True,
        step_percent: float | None = None,
        step_interval: float | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "environment": environment,
            "rolling": rolling,
            "scale_down_previous": scale_down_previous,
        }
        if step_percent is not None:
            body["step_percent"] = step_percent
        if step_interval is not None:
            body["step_interval"] = step_interval
        return dict(self._call("POST", f"/deployments/{deployment_id}/promote", json=body))

    def promotion(self, model: str, environment: str, action: str) -> dict[str, Any]:
        return dict(
            self._call("POST", f"/models/{model}/environments/{environment}/promotion/{action}")
        )

    def create_environment(
        self, model: str, name: str, autoscaling: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        body = {"name": name, "autoscaling": autoscaling or {}}
        return dict(self._call("POST", f"/models/{model}/environments", json=body))

    def delete_environment(self, model: str, name: str) -> dict[str, Any]:
        return dict(self._call("DELETE", f"/models/{model}/environments/{name}"))

    def autoscaling(
        self, model: str, environment: str, changes: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        path = f"/models/{model}/environments/{environment}/autoscaling"
        if changes:
            return dict(self._call("PATCH", path, json=changes))
        return dict(self._call("GET", path))

    def set_active(self, deployment_id: str, active: bool) -> dict[str, Any]:
        action = "activate" if active else "deactivate"
        return dict(self._call("POST", f"/deployments/{deployment_id}/{action}"))

    def wake(self, model: str, environment: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/models/{model}/environments/{environment}/wake"))

    # -- keys ------------------------------------------------------------------------

    def keys(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/keys"))

    def create_key(self, **spec: Any) -> dict[str, Any]:
        """A new key: ``key`` holds it (shown this once), the rest is its record."""
        return dict(self._call("POST", "/keys", json=spec))

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        return dict(self._call("DELETE", f"/keys/{key_id}"))

    # -- waiting ---------------------------------------------------------------------

    def wait_deployed(
        self,
        deployment_id: str,
        environment: str | None,
        timeout: float = 600.0,
        progress: Callable[[str, float], None] | None = None,
    ) -> dict[str, Any]:
        """Until the deployment is ready (and serves ``environment``); AdminError if it fails."""
        started = time.monotonic()
        last = ""
        while True:
            record = self.deployment(deployment_id)
            status = str(record["status"])
            serving = environment is None or environment in record["environments"]
            shown = status if status != "ready" or serving else "ready, switching traffic"
            if shown != last and progress is not None:
                progress(shown, time.monotonic() - started)
            last = shown
            if status == "failed":
                raise AdminError(f"deployment {deployment_id} failed: {record['error']}")
            if status in ("ready", "scaled_to_zero") and serving:
                return record
            if environment is not None and status in ("ready", "scaled_to_zero"):
                env = self.environment(record["model_id"], environment)
                run = env.get("promotion")
                if run is None and deployment_id != env["deployment_id"]:
                    raise AdminError(f"the promotion of {deployment_id} to {environment} ended")
                if run is not None and run["state"] in ("failed", "cancelled"):
                    raise AdminError(f"the promotion {run['state']}: {run.get('error')}")
            if time.monotonic() - started > timeout:
                raise AdminError(f"deployment {deployment_id} is still {status} after {timeout} s")
            time.sleep(0.1)


def render_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """Rows as aligned text columns, ``columns`` being (heading, key) pairs."""
    cells = [[heading.upper() for heading, _ in columns]]
    for row in rows:
        cells.append([_cell(row.get(key)) for _, key in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return " ".join(f"{k}={_cell(v)}" for k, v in value.items())
    return str(value)


class AdminKeyStore:
    """``kingpost keys --platform URL``: the keys of a running platform, through its admin API.

    Only what the command needs (create, list, revoke); the platform checks keys itself.
    """

    def __init__(self, client: AdminClient) -> None:
        self.client = client

    async def candidates(self, key_id: str | None) -> Sequence[ApiKey]:
        raise NotImplementedError("the platform checks its keys itself")

    def create(self, spec: KeySpec) -> tuple[str, ApiKey]:
        body = {
            "name": spec.name,
            "scopes": sorted(spec.scopes),
            "models": sorted(spec.models),
            "environments": sorted(spec.environments),
            "expires_at": spec.expires_at,
            "rate": spec.rate,
            "concurrency": spec.concurrency,
        }
        answer = self._call(lambda: self.client.create_key(**body))
        return str(answer.pop("key")), _key_record(answer)

    def list(self) -> list[ApiKey]:
        return [_key_record(entry) for entry in self._call(self.client.keys)]

    def revoke(self, key_id: str) -> ApiKey:
        try:
            answer = self.client.revoke_key(key_id)
        except AdminError as exc:
            if exc.status_code == 404:
                raise UnknownKeyError(str(exc)) from None
            raise KeyStoreError(str(exc)) from None
        return _key_record(answer)

    def _call(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except AdminError as exc:
            raise KeyStoreError(str(exc)) from None


def _key_record(entry: dict[str, Any]) -> ApiKey:
    """A record as the admin API lists it (no hash; revoked as a flag)."""
    return ApiKey(
        id=str(entry["id"]),
        hash="",
        name=str(entry.get("name") or ""),
        scopes=frozenset(entry.get("scopes") or ()),
        models=frozenset(entry.get("models") or ()),
        environments=frozenset(entry.get("environments") or ()),
        created_at=float(entry.get("created_at") or 0.0),
        expires_at=entry.get("expires_at"),
        revoked_at=0.0 if entry.get("revoked") else None,
    )
