"""Removing pip environments nothing uses any more. An env's ready marker
is touched each time a replica is handed the env, so its age says how long
the env has been idle; an env that a live replica runs on is kept whatever
its age. Removal takes the env's build lock (without waiting), so it never
races a build or a hand-out of the same env."""

from __future__ import annotations

import contextlib
import fcntl
import pathlib
import shutil
from collections.abc import Collection

from executors.runtime_env.build import READY

# Idle this long and used by no live replica: removed.
MAX_IDLE_S = 7 * 24 * 3600.0


def collect(
    root: pathlib.Path, in_use: Collection[str], now_s: float, max_idle_s: float = MAX_IDLE_S
) -> list[str]:
    """Removes the envs under `root` that are idle past `max_idle_s` and not
    among `in_use` (env folder names); returns the names removed."""
    removed = []
    for marker in sorted(root.glob(f"*/{READY}")):
        env_dir = marker.parent
        try:
            is_idle = now_s - marker.stat().st_mtime > max_idle_s
        except FileNotFoundError:
            continue
        if env_dir.name in in_use or not is_idle:
            continue
        with _unless_locked(root / f"{env_dir.name}.lock") as is_free:
            if is_free:
                marker.unlink(missing_ok=True)  # first: a half-removed env reads as unbuilt
                shutil.rmtree(env_dir, ignore_errors=True)
                (root / f"{env_dir.name}.log").unlink(missing_ok=True)
                removed.append(env_dir.name)
    return removed


def env_of(interpreter: str, root: pathlib.Path) -> str | None:
    """The env folder name an interpreter path lives in, if it is under `root`."""
    path = pathlib.Path(interpreter)
    with contextlib.suppress(ValueError):
        return path.relative_to(root).parts[0]
    return None


@contextlib.contextmanager
def _unless_locked(path: pathlib.Path):
    with path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
