"""A deployment whose `hang` requests never finish. Launched with a long
graceful_shutdown_timeout_s, its replica does not exit within a shorter stop
timeout on its own (SIGTERM only starts a drain that waits for `hang`), so
stopping it takes force."""

import asyncio


class Stuck:
    def ping(self) -> str:
        return "pong"

    async def hang(self) -> None:
        await asyncio.sleep(3600)
