"""How a process reaches replica workers: the cluster secret every call
carries, and, for replicas that listen off loopback, TLS checked against the
cluster CA. The proxy, the control plane and handles all open their replica
channels here, so every internal link is authenticated the same way.

Part of the core: it imports nothing of Capstan but the generated code.
"""

from __future__ import annotations

import dataclasses

import grpc

from capstan.v1 import controlplane_pb2

# The metadata key of the cluster secret on every call to a replica.
SECRET_KEY = "capstan-cluster-secret"

Metadata = tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True)
class ClusterLinks:
    """`secret` goes with every call; `ca_cert` (PEM) checks the certificate
    of a replica reached over TLS. Empty ones mean none is known yet."""

    secret: str = dataclasses.field(default="", repr=False)
    ca_cert: bytes = b""

    @property
    def metadata(self) -> Metadata:
        return ((SECRET_KEY, self.secret),) if self.secret else ()

    def channel(
        self, address: str, *, tls: bool, options: tuple[tuple[str, int], ...]
    ) -> grpc.aio.Channel:
        """A channel to the replica at `address`: TLS against the cluster CA
        when `tls`, else plaintext (loopback only)."""
        if not tls:
            return grpc.aio.insecure_channel(address, options=options)
        credentials = grpc.ssl_channel_credentials(root_certificates=self.ca_cert or None)
        return grpc.aio.secure_channel(address, credentials, options=options)

    @classmethod
    def from_proto(cls, message: controlplane_pb2.ClusterLinks) -> ClusterLinks:
        return cls(message.cluster_secret, message.ca_cert)

    def to_proto(self) -> controlplane_pb2.ClusterLinks:
        return controlplane_pb2.ClusterLinks(cluster_secret=self.secret, ca_cert=self.ca_cert)
