"""Rollout progress for a caller that waits on an apply: after a quiet
second, the rollout's events (replicas started and stopped, why a replica is
PENDING, state changes) are printed to stderr as they happen, so a slow or
stuck deploy says why; a quick one prints nothing."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

from capstan.client import ControlPlaneClient, Stream
from capstan.errors import CapstanError
from capstan.v1 import controlplane_pb2 as cp

# Events come at most a reconcile pass plus a second late, so a waiting
# caller hears why within two seconds.
QUIET_S = 1.0


@contextlib.contextmanager
def reporting(
    client: ControlPlaneClient,
    *,
    deployment: str = "",
    application: str = "",
    quiet_s: float = QUIET_S,
    out: TextIO | None = None,
) -> Iterator[None]:
    """While the block runs, prints the deployment's (or application's)
    new events once `quiet_s` has passed. Never fails the block: an error
    while watching stops the printing only."""
    try:
        cursor = client.last_event_id()
        stream = client.watch_events(deployment=deployment, application=application,
                                     after_id=cursor)  # fmt: skip
    except CapstanError:  # an older control plane, say: deploy without progress
        yield
        return
    printer = _Printer(stream, time.monotonic() + quiet_s, out or sys.stderr)
    thread = threading.Thread(target=printer.run, name="capstan-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stream.close()
        thread.join(timeout=1.0)


def describe_event(event: cp.Event) -> str:
    """One event as a line: time, deployment (and replica), kind, message."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event.time_s))
    who = f"{event.deployment}/{event.replica}" if event.replica else event.deployment
    return f"{stamp}  {who}  {event.kind}: {event.message}"


class _Printer:
    """Holds events back until the quiet time is over, then prints them."""

    def __init__(self, stream: Stream[cp.Event], speak_mono_s: float, out: TextIO) -> None:
        self._stream = stream
        self._speak_mono_s = speak_mono_s
        self._out = out
        self._held: list[cp.Event] = []
        self._timer = threading.Timer(max(0.0, speak_mono_s - time.monotonic()), self._flush)
        self._timer.daemon = True
        self._lock = threading.Lock()

    def run(self) -> None:
        self._timer.start()
        try:
            for event in self._stream:
                with self._lock:
                    self._held.append(event)
                if time.monotonic() >= self._speak_mono_s:
                    self._flush()
        except CapstanError:
            pass  # the deploy itself reports what matters
        finally:
            self._timer.cancel()

    def _flush(self) -> None:
        with self._lock:
            held, self._held = self._held, []
        for event in held:
            print(f"capstan: {describe_event(event)}", file=self._out, flush=True)
