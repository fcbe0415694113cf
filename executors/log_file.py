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
import codecs
import contextlib
import datetime
import os
import pathlib
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

_T = TypeVar("_T")
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


# A log's bytes from an offset to its end (b"" when it does not exist), and
# the offset they start at: 0 instead when the log was truncated (rotated).
Reader = Callable[[int], Awaitable[tuple[bytes, int]]]


async def read_log(read: Reader, cutoff_s: float | None, follow: bool) -> AsyncIterator[str]:
    """The log's lines since `cutoff_s`, then with `follow` each line
    appended later, until the caller stops iterating."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    data, _ = await read(0)
    offset = len(data)
    lines, partial = _split(decoder.decode(data))
    for line in lines_since(lines, cutoff_s):
        yield line
    while follow:
        await asyncio.sleep(_FOLLOW_PERIOD_S)
        data, start = await read(offset)
        if start < offset:  # rotated: an unfinished line went with the old content
            partial = ""
            decoder.reset()
        offset = start + len(data)
        lines, partial = _split(partial + decoder.decode(data))
        for line in lines:
            yield line


async def merged(sources: Sequence[AsyncIterator[_T]]) -> AsyncIterator[_T]:
    """The items of every source as they come, until all have ended (or
    the caller stops iterating, which stops them all)."""
    items: asyncio.Queue[tuple[bool, _T | None]] = asyncio.Queue(maxsize=1000)

    async def pump(source: AsyncIterator[_T]) -> None:
        async for item in source:
            await items.put((True, item))

    async def pump_all() -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                for source in sources:
                    tasks.create_task(pump(source))
        finally:
            items.put_nowait((False, None))

    pumping = asyncio.create_task(pump_all())
    try:
        while True:
            is_item, item = await items.get()
            if not is_item:
                break
            yield item  # type: ignore[misc]
        await pumping  # raises what a source raised
    finally:
        pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pumping


def read_log_file(path: pathlib.Path, cutoff_s: float | None, follow: bool) -> AsyncIterator[str]:
    """`read_log` of a file on this machine."""

    async def read(offset: int) -> tuple[bytes, int]:
        return await asyncio.to_thread(_read_from, path, offset)

    return read_log(read, cutoff_s, follow)


def _read_from(path: pathlib.Path, offset: int) -> tuple[bytes, int]:
    try:
        with path.open("rb") as log:
            if log.seek(0, os.SEEK_END) < offset:  # rotated: what is there now is new
                offset = 0
            log.seek(offset)
            return log.read(), offset
    except FileNotFoundError:
        return b"", offset


def rotate(folder: pathlib.Path, max_bytes: int, backups: int) -> None:
    """Each `*.log` in `folder` past `max_bytes` is copied to `.1` (older
    copies shift to `.2`, ...) and truncated in place, as logrotate's
    copytruncate does: a replica writes its output through a descriptor
    opened for appending, so it goes on writing at the new end."""
    for path in folder.glob("*.log"):
        try:
            if path.stat().st_size <= max_bytes:
                continue
            for n in range(backups - 1, 0, -1):
                older = path.with_name(f"{path.name}.{n}")
                if older.exists():
                    older.replace(path.with_name(f"{path.name}.{n + 1}"))
            shutil.copyfile(path, path.with_name(f"{path.name}.1"))
            os.truncate(path, 0)
        except FileNotFoundError:
            continue  # removed meanwhile


def _split(text: str) -> tuple[list[str], str]:
    """Whole lines, and the unfinished last one (kept for the next read)."""
    *lines, partial = text.split("\n")
    return lines, partial
