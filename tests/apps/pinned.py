"""A deployment that reports the idna it imports: the version its
runtime_env.pip pins (idna is tiny, pure Python, with no dependencies, and
the test venv has its own, so a wrong interpreter shows)."""

from __future__ import annotations

import sys

import idna


class IdnaVersion:
    def __call__(self, request) -> dict:
        return self.report()

    def report(self) -> dict:
        return {"idna": idna.__version__, "python": sys.executable, "file": idna.__file__}
