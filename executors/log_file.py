"""Reading a replica's log file: the lines since a moment, then (when
following) each new one. Shared by executors whose logs are local files.

Lines carry no time of their own unless the user's logging adds one, so
`since` is decided by the dates found at the start of lines (ISO 8601, as
Python's logging and the JSON format write them): the output shown starts at
the first line dated at or after the cutoff, and a log with no dated line
is shown whole rather than hidden.
"""

from __future__ import annotations

import asyncio
import datetime
import pathlib
import re
from collections.abc import AsyncIterator

# How often a followed file is checked for new lines.
_FOLLOW_PERIOD_S = 0.25
_DATE = re.compile(r'^(?:\{"asctime": ")?(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d)')


def line_time(line: str) -> float | None:
    """The time a line starts with, in seconds since the epoch (UTC when the
    line names no zone, as the JSON format writes), or None."""
    match = _DATE.match(line)
    if match is None:
        return None
    stamp = datetime.datetime.fromisoformat(match.group(1).replace(" ", "T"))
    return stamp.replace(tzinfo=stamp.tzinfo or datetime.UTC).timestamp()


def lines_since(lines: list[str], cutoff_s: float | None) -> list[str]:
    """`lines` from the first one dated at or after `cutoff_s` (None: all);
    every line when none is dated."""
    if cutoff_s is None:
        return lines
    dates = [(i, t) for i, line in enumerate(lines) if (t := line_time(line)) is not None]
    if not dates:
        return lines
    start = next((i for i, t in dates if t >= cutoff_s), len(lines))
    return lines[start:]


async def read_log_file(
    path: pathlib.Path, cutoff_s: float | None, follow: bool
) -> AsyncIterator[str]:
    """The file's lines since `cutoff_s`, then with `follow` each line
    appended later, until the caller stops iterating."""
    text, offset = await asyncio.to_thread(_read_from, path, 0)
    lines, partial = _split(text)
    for line in lines_since(lines, cutoff_s):
        yield line
    while follow:
        await asyncio.sleep(_FOLLOW_PERIOD_S)
        text, offset = await asyncio.to_thread(_read_from, path, offset)
        lines, partial = _split(partial + text)
        for line in lines:
            yield line


def _read_from(path: pathlib.Path, offset: int) -> tuple[str, int]:
    try:
        with path.open("rb") as log:
            if log.seek(0, 2) < offset:  # truncated or replaced: read it again
                offset = 0
            log.seek(offset)
            data = log.read()
    except FileNotFoundError:
        return "", offset
    return data.decode(errors="replace"), offset + len(data)


def _split(text: str) -> tuple[list[str], str]:
    """Whole lines, and the unfinished last one (kept for the next read)."""
    *lines, partial = text.split("\n")
    return lines, partial
