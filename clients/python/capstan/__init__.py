"""Capstan: run Python code as scalable services. Start with `from capstan import serve`."""

import importlib

from capstan.errors import (
    AlreadyExists,
    BackPressure,
    CapstanError,
    DeadlineExceeded,
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
    "DeadlineExceeded",
    "DeployFailed",
    "InvalidSpec",
    "NotFound",
    "Unavailable",
    "UserCodeError",
    "VersionConflict",
    "serve",
]


def __getattr__(name: str):
    # `capstan.serve` loads on first use: replica workers, the proxy and the
    # control plane import the core (capstan.errors, capstan.v1) and must not
    # pay for the SDK (gRPC client, cloudpickle) they never use.
    if name == "serve":
        return importlib.import_module("capstan.serve")
    raise AttributeError(f"module 'capstan' has no attribute {name!r}")
