"""The Ray executor: replicas run as detached, named actors on a Ray cluster.

Needs Ray: `pip install 'capstan[ray]'`. Configured under the executor name
`ray`: `address` ("auto", "host:port" or "ray://host:port"; left out, the
executor starts a Ray of its own), `namespace`, `num_cpus` (own Ray only),
`connect_timeout_s`, `start_timeout_s`, `call_timeout_s`.
"""

try:
    import ray  # noqa: F401 - checked here so that a missing Ray is named plainly
except ImportError as error:
    raise ImportError("the ray executor needs Ray: pip install 'capstan[ray]'") from error

from executors.ray.executor import RayExecutor

__all__ = ["RayExecutor"]
