"""Capstan: run Python code as scalable services. Start with `from capstan import serve`."""

from capstan import serve
from capstan.errors import (
    AlreadyExists,
    BackPressure,
    CapstanError,
    DeployFailed,
    InvalidSpec,
    NotFound,
    Unavailable,
    UserCodeError,
    VersionConflict,
)

__all__ = [
    "AlreadyExists",
    "BackPressure",
    "CapstanError",
    "DeployFailed",
    "InvalidSpec",
    "NotFound",
    "Unavailable",
    "UserCodeError",
    "VersionConflict",
    "serve",
]


def __getattr__(name: str):
    # `capstan.serve` on first use: replica workers import capstan.errors and
    # should not pay for the SDK (gRPC client, cloudpickle) they rarely use.
    if name == "serve":
        from capstan import serve

        return serve
    raise AttributeError(f"module 'capstan' has no attribute {name!r}")
