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
