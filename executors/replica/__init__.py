"""The replica worker: the one program every executor starts.

It loads the user's class or function, constructs it, applies its
user_config and serves `capstan.internal.v1.ReplicaService`. Run it as a process with
`python -m executors.replica` (see `__main__`), or in-process with
`start_replica` (the Ray executor does this inside an actor).
"""

from executors.replica.loader import LoadError
from executors.replica.server import RunningReplica, start_replica

__all__ = ["LoadError", "RunningReplica", "start_replica"]
