"""TLS for Capstan's servers: the control API, the proxy's DataPlane and
HTTPS (with a certificate the operator gives), and replicas that listen off
loopback (with one the cluster CA issued).

Part of the core: it imports nothing of Capstan.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Mapping

import grpc


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """Where the operator's certificate, key and (optional) client CA are:
    paths, handed on to the control plane and the proxy."""

    cert: str
    key: str
    client_ca: str = ""

    @classmethod
    def of(cls, cert: str | None, key: str | None, client_ca: str | None) -> TlsFiles | None:
        """None when no certificate is given; raises `ValueError` as
        `ServerTls.from_files` does, for files that cannot be used."""
        if ServerTls.from_files(cert, key, client_ca) is None:
            return None
        return cls(str(cert), str(key), client_ca or "")

    def flags(self) -> list[str]:
        """The same files as `python -m proxy` flags."""
        flags = ["--tls-cert", self.cert, "--tls-key", self.key]
        return flags + (["--tls-client-ca", self.client_ca] if self.client_ca else [])


@dataclasses.dataclass(frozen=True)
class ServerTls:
    """A certificate chain and its key (PEM); with `client_ca`, clients must
    present a certificate that CA signed."""

    cert: bytes
    key: bytes = dataclasses.field(repr=False)
    client_ca: bytes = b""

    @classmethod
    def from_files(
        cls,
        cert: str | os.PathLike[str] | None,
        key: str | os.PathLike[str] | None,
        client_ca: str | os.PathLike[str] | None = None,
    ) -> ServerTls | None:
        """None when no certificate is given. Raises `ValueError` naming the
        flag that is missing or the file that cannot be read."""
        if not cert and not key:
            if client_ca:
                raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
            return None
        if not cert or not key:
            raise ValueError("TLS needs both --tls-cert and --tls-key")
        return cls(_read(cert), _read(key), _read(client_ca) if client_ca else b"")

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.client_ca or None,
            require_client_auth=bool(self.client_ca),
        )


def control_plane_credentials(
    environ: Mapping[str, str] = os.environ,
) -> grpc.ChannelCredentials | None:
    """How a client reaches a control API that serves TLS: CAPSTAN_TLS_CA
    names the CA file (PEM) its certificate is checked against, and
    CAPSTAN_TLS_CERT and CAPSTAN_TLS_KEY the client's own certificate for a
    control API that checks clients. None (plaintext) without CAPSTAN_TLS_CA."""
    ca = environ.get("CAPSTAN_TLS_CA", "")
    if not ca:
        return None
    cert, key = environ.get("CAPSTAN_TLS_CERT", ""), environ.get("CAPSTAN_TLS_KEY", "")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca),
        private_key=_read(key) if key else None,
        certificate_chain=_read(cert) if cert else None,
    )


def listen(server: grpc.aio.Server, address: str, tls: ServerTls | None) -> int:
    """Adds a port for `address` to `server`, TLS when `tls` is given; the
    port bound."""
    if tls is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, tls.server_credentials())


def _read(path: str | os.PathLike[str]) -> bytes:
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None
