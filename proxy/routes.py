"""The HTTP route table: which deployment serves a path.

Matching is longest prefix on whole path segments: "/api" serves "/api",
"/api/" and "/api/x", never "/apix"; "/" is the catch-all. The table is built
once per route-table update so a lookup costs one dict probe per segment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from capstan.v1 import controlplane_pb2


class Route(NamedTuple):
    """A matched route: the prefix (the app's root_path) and the deployment."""

    prefix: str
    deployment: str


class RouteTable:
    """Longest-prefix lookup over whole path segments."""

    __slots__ = ("_by_prefix",)

    def __init__(self, prefixes: Mapping[str, str] | None = None) -> None:
        # Keys are normalised (no trailing "/" except the root), and each
        # value is a prebuilt Route so a hit allocates nothing.
        self._by_prefix: dict[str, Route] = {}
        for prefix, deployment in (prefixes or {}).items():
            key = _normalise(prefix)
            self._by_prefix[key] = Route(key, deployment)

    @classmethod
    def from_endpoints(cls, endpoints: Iterable[controlplane_pb2.Endpoint]) -> RouteTable:
        """The table for the endpoints that have a route prefix."""
        return cls({e.route_prefix: e.name for e in endpoints if e.route_prefix})

    def match(self, path: str) -> Route | None:
        """The route serving `path`, or None when no prefix covers it."""
        by_prefix = self._by_prefix
        candidate = path.rstrip("/") or "/"
        while True:
            route = by_prefix.get(candidate)
            if route is not None:
                return route
            if candidate == "/":
                return None
            cut = candidate.rfind("/")
            candidate = candidate[:cut] if cut > 0 else "/"

    def as_dict(self) -> dict[str, str]:
        """{route_prefix: deployment name}, for /-/routes."""
        return {prefix: route.deployment for prefix, route in sorted(self._by_prefix.items())}

    def __len__(self) -> int:
        return len(self._by_prefix)


def _normalise(prefix: str) -> str:
    if not prefix.startswith("/"):
        raise ValueError(f'route_prefix "{prefix}" must start with "/"')
    return prefix.rstrip("/") or "/"
