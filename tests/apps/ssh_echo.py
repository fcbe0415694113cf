"""Deployments for the ssh executor's tests, started by import path on the
test's sshd hosts."""

from __future__ import annotations

import os
import threading


class Echo:
    """Answers with what it was given and where it runs."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def echo(self, text: str) -> dict:
        return {"text": self.prefix + text, "pid": os.getpid(), "cwd": os.getcwd()}

    def env(self, name: str) -> str | None:
        return os.environ.get(name)

    def say(self, text: str) -> str:
        """Prints `text` to the replica's output (its log)."""
        print(text, flush=True)
        return text


class Broken:
    """User code that fails in its constructor."""

    def __init__(self) -> None:
        raise RuntimeError("Broken refuses to start")


class Stubborn:
    """Never exits after SIGTERM: a non-daemon thread keeps the interpreter
    alive, so only SIGKILL stops it."""

    def __init__(self) -> None:
        threading.Thread(target=threading.Event().wait, name="stubborn").start()

    def echo(self, text: str) -> str:
        return text


class Hanging:
    """A constructor that never returns: the replica is never ready."""

    def __init__(self) -> None:
        threading.Event().wait()
