"""The cluster's keys in the state dir: made once with private modes,
reused after, and certificates that name the replica's host."""

from __future__ import annotations

import ipaddress
import pathlib
import stat

from cryptography import x509

from controlplane.cluster_keys import ClusterKeys


def _mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keys_are_made_private_once_and_reused(tmp_path: pathlib.Path) -> None:
    first = ClusterKeys.load_or_create(tmp_path)
    folder = tmp_path / "cluster"
    assert _mode(folder / "secret") == 0o600 and _mode(folder / "ca.key") == 0o600
    assert len(first.secret) >= 32
    again = ClusterKeys.load_or_create(tmp_path)
    assert (again.secret, again.ca_cert) == (first.secret, first.ca_cert)


def test_a_secret_others_can_read_is_made_private_again(tmp_path: pathlib.Path) -> None:
    ClusterKeys.load_or_create(tmp_path)
    secret = tmp_path / "cluster" / "secret"
    secret.chmod(0o644)
    ClusterKeys.load_or_create(tmp_path)
    assert _mode(secret) == 0o600


def test_issued_certificates_name_the_host_and_chain_to_the_ca() -> None:
    keys = ClusterKeys.generate()
    cert_pem, key_pem = keys.issue(["10.0.0.7", "gpu-1.example"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7")]
    assert names.get_values_for_type(x509.DNSName) == ["gpu-1.example"]
    ca = x509.load_pem_x509_certificate(keys.ca_cert)
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    assert b"PRIVATE KEY" in key_pem
    assert keys.secret not in repr(keys)
