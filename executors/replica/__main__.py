"""`python -m executors.replica --config PATH --ready-file PATH [--host HOST]`:
the replica worker as a process, the way the local and SSH executors start
it (`executors.worker_process`).

`--config` holds a binary `capstan.v1.ReplicaConfig`; `--host` is the
interface to serve on, chosen by the executor. Once the replica serves, the
ready file appears (atomically) holding JSON `{"address", "pid", "nonce",
"replica_id"}`; when the user's code fails to load it holds
`{"error": "..."}` and the process exits with code 3. SIGTERM or SIGINT stop
it gracefully: NOT_SERVING, drain, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import pathlib
import signal
import sys
from collections.abc import Callable, Sequence

from capstan.internal.v1 import replica_pb2
from executors.replica.loader import LoadError
from executors.replica.server import start_replica
from executors.worker_process import Ready, write_ready

log = logging.getLogger("capstan.replica")

EXIT_USER_CODE_FAILED = 3


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    config = replica_pb2.ReplicaConfig.FromString(pathlib.Path(args.config).read_bytes())
    if args.host:
        config.host = args.host
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s replica {config.replica_id}: %(message)s",
    )
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_run(config, pathlib.Path(args.ready_file)))


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m executors.replica")
    parser.add_argument("--config", required=True, help="a binary capstan.v1.ReplicaConfig")
    parser.add_argument("--ready-file", required=True, help="where to write the address once ready")
    parser.add_argument("--host", default="", help="the interface to serve on")
    return parser.parse_args(argv)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _run(config: replica_pb2.ReplicaConfig, ready_file: pathlib.Path) -> int:
    try:
        replica = await start_replica(config)
    except LoadError as error:
        log.error("%s", error, exc_info=error.__cause__)
        write_ready(ready_file, str(error))
        return EXIT_USER_CODE_FAILED
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    tls = bool(config.tls_cert)
    ready = Ready(config.replica_id, replica.address, os.getpid(), config.nonce, tls)
    write_ready(ready_file, ready)
    await stop.wait()
    log.info("stopping: draining in-flight requests")
    await replica.stop()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
