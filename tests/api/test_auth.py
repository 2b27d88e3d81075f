"""Login and the token check, against a real node process over HTTPS."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import nacl.signing
import pytest

from tests.api.helpers import raw_client
from tests.support.node_process import ApiClient, NodeProcess

PUBLIC = {("GET", "/api/auth/challenge"), ("POST", "/api/auth/ed25519"), ("GET", "/api/health")}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _secret(node: NodeProcess) -> bytes:
    return bytes.fromhex((node.data_dir / "jwt.secret").read_text().strip())


def _claims(node: NodeProcess, **over: int | str) -> dict[str, int | str]:
    now = int(time.time())
    claims: dict[str, int | str] = {"peer_id": "a" * 40, "iss": "remote-network-node",
                                    "iat": now, "exp": now + 3600}
    claims.update(over)
    return claims


def bad_tokens(node: NodeProcess, good: str) -> dict[str, str | None]:
    """Every kind of token the node must refuse, by name."""
    header, payload, signature = good.split(".")
    # Change a character in the middle of the signature (the last one may only carry padding).
    mid = len(signature) // 2
    flipped = signature[:mid] + ("A" if signature[mid] != "A" else "B") + signature[mid + 1:]
    forged_payload = _b64(json.dumps(_claims(node, peer_id="b" * 40)).encode())
    now = int(time.time())
    none_header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return {
        "missing": None,
        "malformed": "not-a-jwt",
        "tampered-signature": f"{header}.{payload}.{flipped}",
        "tampered-payload": f"{header}.{forged_payload}.{signature}",
        "expired": jwt.encode(_claims(node, iat=now - 7200, exp=now - 60), _secret(node),
                              algorithm="HS256"),
        "alg-none": f"{none_header}.{_b64(json.dumps(_claims(node)).encode())}.",
        "other-secret": jwt.encode(_claims(node), b"x" * 32, algorithm="HS256"),
    }


def protected_routes(node: NodeProcess) -> list[tuple[str, str]]:
    spec = httpx.get(f"{node.http_url}/openapi.json", timeout=30).json()
    routes = []
    for path, ops in spec["paths"].items():
        if not path.startswith("/api/"):
            continue
        concrete = re.sub(r"\{[^}]+\}", "1", path)
        for method in ops:
            if (method.upper(), path) not in PUBLIC:
                routes.append((method.upper(), concrete))
    return routes


def test_challenge_shape(client: ApiClient) -> None:
    body = client.get("/api/auth/challenge").json()
    assert body["expires_in"] == 300
    assert re.fullmatch(r"[0-9a-f]{64}", body["challenge"])
    assert client.get("/api/auth/challenge").json()["challenge"] != body["challenge"]


def test_login_returns_working_token(node_proc: NodeProcess, client: ApiClient) -> None:
    resp = client.http.post("/api/auth/ed25519", json=client.sign_challenge())
    assert resp.status_code == 200
    body = resp.json()
    assert body["success"] is True
    assert body["peer_id"] == client.get("/api/node/status").json()["peer_id"]
    claims = jwt.decode(body["token"], _secret(node_proc), algorithms=["HS256"],
                        options={"verify_iss": False})
    assert claims["peer_id"] == body["peer_id"]
    assert claims["exp"] - claims["iat"] == 24 * 3600
    with raw_client(node_proc, token=body["token"]) as c:
        assert c.get("/api/services").status_code == 200


def test_replayed_challenge_is_refused(client: ApiClient) -> None:
    signed = client.sign_challenge()
    assert client.http.post("/api/auth/ed25519", json=signed).status_code == 200
    resp = client.http.post("/api/auth/ed25519", json=signed)
    assert resp.status_code == 401
    assert resp.json() == {"success": False, "error": "Invalid or expired challenge"}


def test_unknown_challenge_is_refused(client: ApiClient) -> None:
    signed = client.sign_challenge()
    other = "ab" * 32
    signed["signature"] = client.key.sign(bytes.fromhex(other)).signature.hex()
    signed["challenge"] = other
    resp = client.http.post("/api/auth/ed25519", json=signed)
    assert resp.status_code == 401
    assert resp.json()["success"] is False


def test_bad_signature_is_refused(client: ApiClient) -> None:
    signed = client.sign_challenge()
    sig = bytearray(bytes.fromhex(signed["signature"]))
    sig[5] ^= 0x01
    signed["signature"] = sig.hex()
    resp = client.http.post("/api/auth/ed25519", json=signed)
    assert resp.status_code == 401
    body = resp.json()
    assert body["success"] is False and "Authentication failed" in body["error"]


def test_signature_over_another_challenge_is_refused(client: ApiClient) -> None:
    first, second = client.sign_challenge(), client.sign_challenge()
    resp = client.http.post("/api/auth/ed25519",
                            json={**second, "signature": first["signature"]})
    assert resp.status_code == 401


def test_unlisted_key_is_refused(node_proc: NodeProcess) -> None:
    stranger = ApiClient(node_proc.https_url, nacl.signing.SigningKey.generate())
    try:
        resp = stranger.http.post("/api/auth/ed25519", json=stranger.sign_challenge())
        assert resp.status_code == 401
        assert resp.json() == {"success": False,
                               "error": "Authentication failed: key not authorized"}
    finally:
        stranger.close()


@pytest.mark.parametrize("body", [
    {"challenge": "zz" * 32, "signature": "00" * 64, "public_key": "00" * 32},
    {"challenge": "00" * 32, "signature": "not hex", "public_key": "00" * 32},
    {"challenge": "00" * 32, "signature": "00" * 64, "public_key": "00" * 3},
    {"challenge": "00" * 32, "public_key": "00" * 32},
    {"signature": "00" * 64, "public_key": "00" * 32},
    [],
])
def test_malformed_login_is_400(client: ApiClient, body: object) -> None:
    resp = client.http.post("/api/auth/ed25519", json=body)
    assert resp.status_code == 400
    out = resp.json()
    assert out["success"] is False and out["error"]


def test_login_body_not_json_is_400(client: ApiClient) -> None:
    resp = client.http.post("/api/auth/ed25519", content=b"{not json",
                            headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    assert resp.json()["success"] is False


def test_auth_endpoint_wrong_method_is_405_in_auth_shape(client: ApiClient) -> None:
    resp = client.http.get("/api/auth/ed25519")
    assert resp.status_code == 405
    assert resp.json() == {"success": False, "error": "Method not allowed"}


def test_health_is_public(node_proc: NodeProcess) -> None:
    with raw_client(node_proc) as c:
        resp = c.get("/api/health")
    assert resp.status_code == 200
    assert resp.json()["status"] == "ok"


def test_every_protected_route_refuses_bad_tokens(node_proc: NodeProcess,
                                                  client: ApiClient) -> None:
    routes = protected_routes(node_proc)
    paths = {p for _, p in routes}
    # The sweep covers at least the foundation's resources.
    for expected in ("/api/node/status", "/api/services/1", "/api/workflows/1/nodes/1",
                     "/api/blacklist", "/api/workflow-executions/1/status",
                     "/api/job-executions/1/interfaces", "/api/relay/sessions"):
        assert expected in paths
    assert client.token is not None
    tokens = bad_tokens(node_proc, client.token)
    failures = []
    with raw_client(node_proc) as c:
        for name, token in tokens.items():
            headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
            for method, path in routes:
                resp = c.request(method, path, headers=headers, json={})
                if resp.status_code != 401 or resp.json() != {"error": "Unauthorized"}:
                    failures.append(f"{name} {method} {path}: {resp.status_code} {resp.text}")
    assert not failures, "\n".join(failures[:20])


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "token", "Bearer a.b"])
def test_odd_authorization_headers_are_401(node_proc: NodeProcess, header: str) -> None:
    with raw_client(node_proc) as c:
        resp = c.get("/api/node/status", headers={"Authorization": header})
    assert resp.status_code == 401
    assert resp.json() == {"error": "Unauthorized"}


# -- nodes of their own ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def short_ttl_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node whose challenges live 1 s, with one extra key in authorized_keys."""
    data_dir: Path = tmp_path_factory.mktemp("short-ttl")
    friend = nacl.signing.SigningKey.generate()
    (data_dir / "authorized_keys").write_text(
        f"# a friend's laptop\n{bytes(friend.verify_key).hex()}  laptop\nnot-a-key\n")
    (data_dir / "friend.seed").write_text(bytes(friend).hex())
    node = NodeProcess(data_dir, env={"RN_CHALLENGE_TTL_SECONDS": "1",
                                     "RN_PREFECT_WARMUP": "false"}).start()
    try:
        yield node
    finally:
        node.stop()


def test_expired_challenge_is_refused(short_ttl_node: NodeProcess) -> None:
    c = ApiClient(short_ttl_node.https_url, nacl.signing.SigningKey(short_ttl_node.seed()))
    try:
        assert c.http.get("/api/auth/challenge").json()["expires_in"] == 1
        signed = c.sign_challenge()
        time.sleep(2.2)
        resp = c.http.post("/api/auth/ed25519", json=signed)
        assert resp.status_code == 401
        assert resp.json() == {"success": False, "error": "Invalid or expired challenge"}
        # A fresh one, used at once, still works.
        assert c.http.post("/api/auth/ed25519", json=c.sign_challenge()).status_code == 200
    finally:
        c.close()


def test_authorized_key_can_log_in(short_ttl_node: NodeProcess) -> None:
    seed = bytes.fromhex((short_ttl_node.data_dir / "friend.seed").read_text())
    friend = short_ttl_node.client(seed=seed)
    try:
        key = nacl.signing.SigningKey(seed)
        import hashlib

        expected = hashlib.sha1(bytes(key.verify_key)).hexdigest()
        resp = friend.http.post("/api/auth/ed25519", json=friend.sign_challenge())
        assert resp.json()["peer_id"] == expected
        assert friend.get("/api/services").status_code == 200
    finally:
        friend.close()
