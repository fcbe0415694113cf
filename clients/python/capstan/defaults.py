"""Defaults that more than one package applies, each written once.

Part of the core every package may import: it imports nothing. A default
that only one module applies lives in that module, beside its use.
"""

from __future__ import annotations

# Ray Serve's deployment defaults. The control plane fills a spec with them;
# a replica or a router given no value (an older client, a bare proto) falls
# back to the same ones.
MAX_CONCURRENT_QUERIES = 100
GRACEFUL_SHUTDOWN_TIMEOUT_S = 20.0

# Where a local Capstan listens: the control API, and the proxy's HTTP and
# gRPC DataPlane ports.
CONTROL_PLANE_PORT = 8765
CONTROL_PLANE_ADDRESS = f"127.0.0.1:{CONTROL_PLANE_PORT}"
HTTP_PORT = 8000
HTTP_URL = f"http://127.0.0.1:{HTTP_PORT}"
GRPC_PORT = 9000
# The control plane's HTTP port: /metrics and the dashboard.
METRICS_PORT = 8766
