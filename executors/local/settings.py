"""The local executor's config section, e.g. in a `capstan start` config:

    executors:
      local:
        num_cpus: 8                 # default: this machine's CPU count
        gpu_ids: ["0", "1"]         # default: what nvidia-smi lists
        resources: {ssd: 1}
        python: /opt/venv/bin/python   # default: the control plane's interpreter
        start_timeout_s: 60
        build_timeout_s: 900        # building a runtime_env (pip install)

Local replicas always listen on loopback (no TLS is needed there).
"""

from __future__ import annotations

import os
import sys

from pydantic import Field

from capstan.sections import GpuIds, NonEmpty, PositiveNumber, Resources, Section


class LocalSettings(Section):
    """The local executor's config section, validated."""

    num_cpus: PositiveNumber = Field(default_factory=lambda: float(os.cpu_count() or 1))
    # None: ask nvidia-smi on first use.
    gpu_ids: GpuIds | None = None
    resources: Resources = Field(default_factory=dict)
    python: NonEmpty = sys.executable
    start_timeout_s: PositiveNumber = 60.0
    # How long building a runtime_env (pip install) may take.
    build_timeout_s: PositiveNumber = 900.0
