"""Steady HTTP load from background threads, for tests that change a
deployment while it serves and then check that no request failed."""

from __future__ import annotations

import threading

import httpx


class HttpLoad:
    """`threads` threads sending GET `url` until the block ends. `results`
    holds each answer's body (200), its status code (any other), or the
    error, in the order they came."""

    def __init__(self, url: str, threads: int) -> None:
        self._url = url
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send) for _ in range(threads)]
        self.results: list[str] = []

    def _send(self) -> None:
        with httpx.Client(timeout=30) as http:
            while not self._stop.is_set():
                try:
                    response = http.get(self._url)
                    ok = response.status_code == 200
                    self.results.append(response.text if ok else str(response.status_code))
                except httpx.HTTPError as error:
                    self.results.append(repr(error))

    def __enter__(self) -> HttpLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def assert_no_failure(self, answers: set[str]) -> None:
        failures = [r for r in self.results if r not in answers]
        assert not failures, f"{len(failures)} of {len(self.results)} failed: {failures[:5]}"
