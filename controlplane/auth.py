"""Bearer-token authentication for the control API.

The API runs arbitrary code by design, so with a token configured every call
must carry `authorization: Bearer <token>`; only health checks and reflection
are open. Clients add the header as call metadata.
"""

from __future__ import annotations

from capstan.call_guard import MetadataGuard


def bearer_token_guard(token: str) -> MetadataGuard:
    """Rejects calls without the right bearer token with UNAUTHENTICATED."""
    if not token:
        raise ValueError("the bearer token guard needs a non-empty token")
    return MetadataGuard("authorization", f"Bearer {token}", "missing or wrong bearer token")
