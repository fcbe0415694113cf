"""`python -m controlplane --state-dir DIR --port 8765`: runs the control plane
in the foreground until Shutdown, SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import sys

from controlplane.server import run_control_plane
from controlplane.settings import parse_settings


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = parse_settings()
    except ValueError as error:
        sys.exit(f"capstan control plane: {error}")
    asyncio.run(run_control_plane(settings))


if __name__ == "__main__":
    main()
