"""Collecting idle pip environments: an env is removed only when it is idle
past the limit, no live replica runs on it, and no build holds its lock."""

from __future__ import annotations

import fcntl
import os
import pathlib

from executors.runtime_env.build import READY
from executors.runtime_env.garbage import collect, env_of

DAY_S = 24 * 3600.0


def make_env(root: pathlib.Path, key: str, idle_s: float, now_s: float) -> pathlib.Path:
    env = root / key
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "python").write_text("")
    (env / READY).write_text("{}")
    os.utime(env / READY, (now_s - idle_s, now_s - idle_s))
    return env


def test_only_idle_unused_unlocked_envs_go(tmp_path: pathlib.Path) -> None:
    now_s = 1_000_000_000.0
    idle = make_env(tmp_path, "idle", 30 * DAY_S, now_s)
    recent = make_env(tmp_path, "recent", 1 * DAY_S, now_s)
    used = make_env(tmp_path, "used", 30 * DAY_S, now_s)
    building = make_env(tmp_path, "building", 30 * DAY_S, now_s)
    with (tmp_path / "building.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        removed = collect(tmp_path, {"used"}, now_s, max_idle_s=7 * DAY_S)
    assert removed == ["idle"] and not idle.exists()
    assert recent.exists() and used.exists() and building.exists()


def test_env_of_names_our_envs_only(tmp_path: pathlib.Path) -> None:
    assert env_of(str(tmp_path / "abc" / "bin" / "python"), tmp_path) == "abc"
    assert env_of("/usr/bin/python3", tmp_path) is None
