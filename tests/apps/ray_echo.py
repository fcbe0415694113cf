"""Deployments for the Ray executor's tests, started by import path inside
Ray actors (the test Ray's workers have the repository on PYTHONPATH)."""

from __future__ import annotations

import asyncio
import os


class Echo:
    """Answers with what it was given, and where and how it runs."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def echo(self, text: str) -> str:
        return self.prefix + text

    def env(self, name: str) -> str | None:
        return os.environ.get(name)

    def pid(self) -> int:
        return os.getpid()

    def say(self, text: str) -> str:
        """Prints `text` to the actor's stdout (its log)."""
        print(text, flush=True)
        return text

    async def sleep(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds


class Broken:
    """User code that fails in its constructor."""

    def __init__(self) -> None:
        raise RuntimeError("Broken refuses to start")


class Crashing:
    """User code that takes its whole process down while starting."""

    def __init__(self) -> None:
        os._exit(7)
