"""Login without ``public_key`` (the original UI's body), against a real node over HTTPS."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import jwt
import nacl.signing
import pytest

from tests.api.helpers import raw_client
from tests.support.node_process import ApiClient, NodeProcess


def _secret(node: NodeProcess) -> bytes:
    return bytes.fromhex((node.data_dir / "jwt.secret").read_text().strip())


def _signed(c: ApiClient, key: nacl.signing.SigningKey) -> dict[str, str]:
    """A fresh challenge signed by ``key``, in the UI's body: no ``public_key``."""
    challenge = c.http.get("/api/auth/challenge").json()["challenge"]
    return {"challenge": challenge, "signature": key.sign(bytes.fromhex(challenge)).signature.hex()}


@pytest.fixture(scope="module")
def ui_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node with one friend's key (and a few unrelated ones) in authorized_keys."""
    data_dir: Path = tmp_path_factory.mktemp("ui-login")
    friend = nacl.signing.SigningKey.generate()
    others = [bytes(nacl.signing.SigningKey.generate().verify_key).hex() for _ in range(3)]
    (data_dir / "authorized_keys").write_text(
        "# keys\n" + "".join(f"{k} other\n" for k in others)
        + f"laptop {bytes(friend.verify_key).hex()}\n")
    (data_dir / "friend.seed").write_text(bytes(friend).hex())
    node = NodeProcess(data_dir, env={"RN_PREFECT_WARMUP": "false"}).start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture()
def anon(ui_node: NodeProcess) -> Iterator[ApiClient]:
    c = ApiClient(ui_node.https_url, nacl.signing.SigningKey.generate())
    try:
        yield c
    finally:
        c.close()


def test_node_key_without_public_key(ui_node: NodeProcess, anon: ApiClient) -> None:
    own = nacl.signing.SigningKey(ui_node.seed())
    resp = anon.http.post("/api/auth/ed25519", json=_signed(anon, own))
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {"success", "token", "peer_id"}
    assert body["success"] is True
    node_peer = hashlib.sha1(bytes(own.verify_key)).hexdigest()
    assert body["peer_id"] == node_peer
    claims = jwt.decode(body["token"], _secret(ui_node), algorithms=["HS256"],
                        options={"verify_iss": False})
    assert claims["peer_id"] == node_peer
    with raw_client(ui_node, token=body["token"]) as c:
        status = c.get("/api/node/status")
        assert status.status_code == 200
        assert status.json()["peer_id"] == node_peer


def test_authorized_key_without_public_key(ui_node: NodeProcess, anon: ApiClient) -> None:
    friend = nacl.signing.SigningKey(bytes.fromhex((ui_node.data_dir / "friend.seed").read_text()))
    resp = anon.http.post("/api/auth/ed25519", json=_signed(anon, friend))
    assert resp.status_code == 200
    body = resp.json()
    assert body["success"] is True
    # The answer names this node (the UI's "node"); the token names the key that signed.
    node_peer = hashlib.sha1(bytes(nacl.signing.SigningKey(ui_node.seed()).verify_key)).hexdigest()
    assert body["peer_id"] == node_peer
    claims = jwt.decode(body["token"], _secret(ui_node), algorithms=["HS256"],
                        options={"verify_iss": False})
    assert claims["peer_id"] == hashlib.sha1(bytes(friend.verify_key)).hexdigest()
    with raw_client(ui_node, token=body["token"]) as c:
        assert c.get("/api/services").status_code == 200


def test_unlisted_key_without_public_key_is_401(ui_node: NodeProcess, anon: ApiClient) -> None:
    stranger = nacl.signing.SigningKey.generate()
    resp = anon.http.post("/api/auth/ed25519", json=_signed(anon, stranger))
    assert resp.status_code == 401
    assert resp.json() == {"success": False, "error": "Authentication failed: bad signature"}


def test_tampered_signature_without_public_key_is_401(ui_node: NodeProcess,
                                                      anon: ApiClient) -> None:
    signed = _signed(anon, nacl.signing.SigningKey(ui_node.seed()))
    sig = bytearray(bytes.fromhex(signed["signature"]))
    sig[7] ^= 0x01
    resp = anon.http.post("/api/auth/ed25519", json={**signed, "signature": sig.hex()})
    assert resp.status_code == 401
    assert resp.json() == {"success": False, "error": "Authentication failed: bad signature"}


def test_reused_challenge_without_public_key_is_refused(ui_node: NodeProcess,
                                                        anon: ApiClient) -> None:
    signed = _signed(anon, nacl.signing.SigningKey(ui_node.seed()))
    assert anon.http.post("/api/auth/ed25519", json=signed).status_code == 200
    resp = anon.http.post("/api/auth/ed25519", json=signed)
    assert resp.status_code == 401
    assert resp.json() == {"success": False, "error": "Invalid or expired challenge"}


def test_failed_attempt_uses_up_the_challenge(ui_node: NodeProcess, anon: ApiClient) -> None:
    challenge = anon.http.get("/api/auth/challenge").json()["challenge"]
    stranger = nacl.signing.SigningKey.generate()
    bad = stranger.sign(bytes.fromhex(challenge)).signature.hex()
    resp = anon.http.post("/api/auth/ed25519", json={"challenge": challenge, "signature": bad})
    assert resp.status_code == 401
    good = nacl.signing.SigningKey(ui_node.seed()).sign(bytes.fromhex(challenge)).signature.hex()
    resp = anon.http.post("/api/auth/ed25519", json={"challenge": challenge, "signature": good})
    assert resp.status_code == 401
    assert resp.json() == {"success": False, "error": "Invalid or expired challenge"}


def test_unknown_challenge_without_public_key_is_refused(ui_node: NodeProcess,
                                                         anon: ApiClient) -> None:
    other = "ab" * 32
    sig = nacl.signing.SigningKey(ui_node.seed()).sign(bytes.fromhex(other)).signature.hex()
    resp = anon.http.post("/api/auth/ed25519", json={"challenge": other, "signature": sig})
    assert resp.status_code == 401
    assert resp.json() == {"success": False, "error": "Invalid or expired challenge"}


@pytest.mark.parametrize("body", [
    {"challenge": "00" * 32, "signature": "not hex"},
    {"challenge": "00" * 32, "signature": "00" * 63},
    {"signature": "00" * 64},
])
def test_malformed_body_without_public_key_is_400(anon: ApiClient, body: object) -> None:
    resp = anon.http.post("/api/auth/ed25519", json=body)
    assert resp.status_code == 400
    assert resp.json()["success"] is False


def test_with_public_key_still_names_the_signer(ui_node: NodeProcess) -> None:
    seed = bytes.fromhex((ui_node.data_dir / "friend.seed").read_text())
    friend = ui_node.client(seed=seed)
    try:
        resp = friend.http.post("/api/auth/ed25519", json=friend.sign_challenge())
        assert resp.status_code == 200
        expected = hashlib.sha1(bytes(nacl.signing.SigningKey(seed).verify_key)).hexdigest()
        assert resp.json()["peer_id"] == expected
    finally:
        friend.close()
