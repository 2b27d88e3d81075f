"""Self-signed ECDSA P-256 certificates, generated once and kept in the data dir.

Both files are written durably (fsync and rename). A pair of which a file is missing is made
anew; a file that is there but empty or unreadable is a ``CertificateError``, never replaced.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from network.identity import IdentityError, write_durable, write_private


class CertificateError(IdentityError):
    """The TLS certificate or key in the data dir is there but empty or unreadable."""


def ensure_self_signed(directory: Path, *, common_name: str, stem: str = "server",
                       valid_days: int = 3650) -> tuple[Path, Path]:
    """Return (certificate path, key path), creating a new pair when either is missing."""
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    if cert_path.exists() and key_path.exists():
        check_pair(cert_path, key_path)
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
    now = dt.datetime.now(dt.UTC)
    alt_names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName(socket.gethostname()),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=valid_days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    write_private(key_path, key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    write_durable(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return cert_path, key_path


def check_pair(cert_path: Path, key_path: Path) -> None:
    """``CertificateError`` unless both files hold a PEM certificate and private key."""
    for path, load in ((cert_path, x509.load_pem_x509_certificate),
                       (key_path, lambda raw: serialization.load_pem_private_key(raw, None))):
        raw = path.read_bytes()
        try:
            load(raw)
        except (ValueError, TypeError) as exc:
            raise CertificateError(
                f"the TLS file {path} is {'empty' if not raw.strip() else 'damaged'}: restore "
                f"it, or delete {cert_path.name} and {key_path.name} in {path.parent} to make "
                f"a new self-signed pair") from exc
