"""Deployments with user_config, health checks and failing constructors."""

import asyncio


class Threshold:
    def __init__(self) -> None:
        self.threshold = None
        self.healthy = True
        self.hanging = False
        self.calls = 0

    def reconfigure(self, config: dict) -> None:
        self.calls += 1
        # Assign before validating, so a failed call leaves a mess to undo.
        self.threshold = config["threshold"]
        if self.threshold < 0:
            raise ValueError("threshold must be >= 0")

    def get(self):
        return self.threshold

    def set_healthy(self, healthy: bool) -> None:
        self.healthy = healthy

    def set_hanging(self, hanging: bool) -> None:
        self.hanging = hanging

    async def check_health(self) -> None:
        if self.hanging:
            await asyncio.sleep(3600)
        if not self.healthy:
            raise RuntimeError("model weights are gone")


class Broken:
    def __init__(self) -> None:
        raise ValueError("boom")
