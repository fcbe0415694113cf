"""A deployment that answers with what its replica sees: which process it
is, the environment variables named in `?env=NAME` (repeatable), and, for
`?module=NAME`, that module's `VALUE` (None when it does not import)."""

import importlib
import os


class Probe:
    def __call__(self, request) -> dict:
        names = request.query_params.getlist("env")
        module = request.query_params.get("module")
        return {
            "pid": os.getpid(),
            "env": {name: os.environ.get(name) for name in names},
            "module": _value_of(module) if module else None,
        }


def _value_of(module: str) -> str | None:
    try:
        return importlib.import_module(module).VALUE
    except ImportError:
        return None
