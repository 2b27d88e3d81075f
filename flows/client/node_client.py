"""A small synchronous client for a node's REST API, for scripts and the CLI.

``NodeClient(url, token)`` talks to any node; ``NodeClient.local(data_dir)`` talks to the node
whose data dir is on this machine, minting its own token from the node's key and JWT secret as
``remote-network token`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx


class NodeError(Exception):
    """The node answered with an error, or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NodeClient:
    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 30.0,
                 verify: bool = False) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # Nodes serve HTTPS with a self-signed certificate; callers may pin it through ``verify``.
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout,
                                 verify=verify)

    @classmethod
    def local(cls, data_dir: Path | None = None, *, url: str | None = None,
              key_passphrase_file: Path | None = None, timeout: float = 30.0) -> NodeClient:
        """A client for the node whose data dir is on this machine (default: the usual one).

        Without ``url`` it talks plain HTTP to the address the running node recorded in its
        data dir, or to 127.0.0.1 on the HTTP port from the settings
        (``orchestrator.address_file``).
        """
        from orchestrator.address_file import local_http_url

        token, settings = mint_token(data_dir, key_passphrase_file=key_passphrase_file)
        return cls(url or local_http_url(settings), token, timeout=timeout)

    # -- plumbing ----------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise NodeError(f"cannot reach the node at {self.base_url}: {exc}") from exc
        if resp.status_code >= 400:
            raise NodeError(f"{method} {path}: {resp.status_code} {error_text(resp)}",
                            status=resp.status_code)
        if not resp.content:
            return {}
        try:
            return resp.json()
        except ValueError as exc:
            raise NodeError(f"{method} {path}: the node answered something that is not JSON",
                            status=resp.status_code) from exc

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=json, **kwargs)

    def put(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return self.request("PUT", path, json=json, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- resources used by workflow definitions -----------------------------------------------
    def peer_id(self) -> str:
        return str(self.get("/api/node/status")["peer_id"])

    def services(self) -> list[dict[str, Any]]:
        return list(self.get("/api/services")["services"])

    def service(self, service_id: int) -> dict[str, Any]:
        return dict(self.get(f"/api/services/{service_id}")["service"])

    def interfaces(self, service_id: int) -> list[dict[str, Any]]:
        return list(self.get(f"/api/services/{service_id}/interfaces")["interfaces"])

    def workflows(self) -> list[dict[str, Any]]:
        return list(self.get("/api/workflows")["workflows"])

    def find_workflow(self, id_or_name: str | int) -> dict[str, Any]:
        """A workflow by id (an int or all digits) or by its exact name."""
        text = str(id_or_name).strip()
        if text.isdigit():
            return dict(self.get(f"/api/workflows/{int(text)}"))
        matches = [w for w in self.workflows() if w["name"] == text]
        if not matches:
            raise NodeError(f"no workflow named '{text}' on this node", status=404)
        if len(matches) > 1:
            ids = ", ".join(str(w["id"]) for w in matches)
            raise NodeError(f"{len(matches)} workflows are named '{text}' (ids {ids}): "
                            "use an id", status=409)
        return dict(matches[0])

    def ensure_standalone_service(self, name: str, executable_path: str, *,
                                  arguments: list[str] | None = None,
                                  interfaces: list[dict[str, Any]] | None = None,
                                  description: str = "", **fields: Any) -> int:
        """The id of the service called ``name``, creating it from a local executable if absent."""
        for service in self.services():
            if service["name"] == name:
                return int(service["id"])
        body: dict[str, Any] = {"service_name": name, "executable_path": executable_path,
                                "arguments": list(arguments or []), "description": description,
                                **fields}
        if interfaces is not None:
            body["custom_interfaces"] = interfaces
        return int(self.post("/api/services/standalone/from-local", json=body)["service"]["id"])


def error_text(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:300] or resp.reason_phrase
    if isinstance(body, dict) and body.get("error"):
        return str(body["error"])
    return str(body)[:300]


def mint_token(data_dir: Path | None = None, *,
               key_passphrase_file: Path | None = None) -> tuple[str, Any]:
    """A fresh JWT for the node whose data dir this is, and that node's settings.

    The node must have started once there: nothing is created by a client.
    """
    from orchestrator.auth import Authenticator, load_or_create_secret
    from orchestrator.config import Settings
    from orchestrator.keys import load_identity

    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if key_passphrase_file is not None:
        overrides["key_passphrase_file"] = key_passphrase_file
    settings = Settings(**overrides)
    for path in (settings.key_path, settings.jwt_secret_path):
        if not path.exists():
            raise NodeError(f"no node data in {settings.data_dir} ({path.name} is missing): "
                            "start the node there first, or give --url and --token")
    identity = load_identity(settings)
    auth = Authenticator(identity, load_or_create_secret(settings.jwt_secret_path),
                         token_ttl=settings.jwt_ttl_seconds)
    return auth.issue_token(), settings
