"""The cluster's keys, kept in the control plane's state dir so that a
restarted control plane still reaches the replicas it adopts:

    cluster/secret    the secret every call to a replica carries (0600)
    cluster/ca.pem    the cluster CA's certificate, handed to every caller
    cluster/ca.key    its private key (0600); it never leaves this machine

The CA issues each replica that listens off loopback (SSH hosts, a Ray
cluster) a certificate for the host it serves on; callers check replicas
against the CA's certificate. Made on first start, reused after.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
import pathlib
import secrets
from collections.abc import Callable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from capstan.links import ClusterLinks

_CA_DAYS = 3650
_LEAF_DAYS = 825
_PRIVATE = 0o600


@dataclasses.dataclass(frozen=True)
class ClusterKeys:
    """The cluster secret and CA of one state dir."""

    secret: str = dataclasses.field(repr=False)
    ca_cert: bytes
    ca_key: ec.EllipticCurvePrivateKey = dataclasses.field(repr=False)

    @classmethod
    def load_or_create(cls, state_dir: pathlib.Path) -> ClusterKeys:
        """Reads the keys under `state_dir/cluster`, making the missing ones."""
        folder = state_dir / "cluster"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        secret = _read_or_write(folder / "secret", lambda: secrets.token_urlsafe(32).encode())
        key_pem = _read_or_write(folder / "ca.key", lambda: _pem(_new_key()))
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{folder / 'ca.key'} is not the EC key Capstan made")
        cert = _read_or_write(folder / "ca.pem", lambda: _ca_cert(key), mode=0o644)
        return cls(secret.decode().strip(), cert, key)

    @classmethod
    def generate(cls) -> ClusterKeys:
        """A fresh set kept nowhere, for a cluster that lives in one test."""
        key = _new_key()
        return cls(secrets.token_urlsafe(32), _ca_cert(key), key)

    @property
    def links(self) -> ClusterLinks:
        return ClusterLinks(self.secret, self.ca_cert)

    def issue(self, hosts: Sequence[str]) -> tuple[bytes, bytes]:
        """A certificate (PEM) for a replica serving on `hosts` (IP addresses
        or names, all in its subjectAltName), and its private key (PEM)."""
        key = _new_key()
        ca = x509.load_pem_x509_certificate(self.ca_cert)
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=_LEAF_DAYS))
            .add_extension(x509.SubjectAlternativeName([_name(h) for h in hosts]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM), _pem(key)


def _read_or_write(path: pathlib.Path, make: Callable[[], bytes], mode: int = _PRIVATE) -> bytes:
    """The file's bytes; made with `make()` and `mode` if missing. A private
    file that others can read is tightened back to 0600."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        if mode == _PRIVATE and path.stat().st_mode & 0o077:
            path.chmod(_PRIVATE)
        return path.read_bytes()
    data = make()
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    return data


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _ca_cert(key: ec.EllipticCurvePrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Capstan cluster CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return x509.DNSName(host)
