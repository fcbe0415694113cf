"""Reading and rotating replica logs: `since` by the dates lines carry, a
followed log that gets rotated, and copy-truncate rotation."""

from __future__ import annotations

import asyncio
import datetime
import pathlib

import pytest

from executors.log_file import lines_since, read_log_file, rotate

JSON_LINE = '{"asctime": "2026-01-02T11:00:00", "message": "as the JSON format writes"}'


def at(hour: int, minute: int) -> float:
    return datetime.datetime(2026, 1, 2, hour, minute, tzinfo=datetime.UTC).timestamp()


@pytest.mark.parametrize(
    ("lines", "cutoff_s", "expected"),
    [
        (["a", "b"], None, ["a", "b"]),
        (["printed", "no dates at all"], at(10, 0), ["printed", "no dates at all"]),
        (
            ["2026-01-02 09:00:00 old", "traceback of old", "2026-01-02 10:30:00 new", "tail"],
            at(10, 0),
            ["2026-01-02 10:30:00 new", "tail"],
        ),
        ([JSON_LINE], at(10, 0), [JSON_LINE]),
        (["2026-01-02 09:00:00 all old"], at(10, 0), []),
    ],
)
def test_lines_since_start_at_the_first_line_dated_after_the_cutoff(
    lines: list[str], cutoff_s: float | None, expected: list[str]
) -> None:
    assert lines_since(lines, cutoff_s) == expected


def test_rotate_copies_and_truncates_large_logs_only(tmp_path: pathlib.Path) -> None:
    big, small = tmp_path / "big.log", tmp_path / "small.log"
    big.write_text("x" * 100)
    small.write_text("y")
    rotate(tmp_path, max_bytes=10, backups=2)
    assert (big.read_text(), (tmp_path / "big.log.1").read_text()) == ("", "x" * 100)
    big.write_text("z" * 50)
    rotate(tmp_path, max_bytes=10, backups=2)
    assert (tmp_path / "big.log.1").read_text() == "z" * 50
    assert (tmp_path / "big.log.2").read_text() == "x" * 100
    assert small.read_text() == "y" and not (tmp_path / "small.log.1").exists()


async def test_a_followed_log_goes_on_after_it_is_rotated(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "replica.log"
    # Rotation shows as a log shorter than what was read; logs rotate at
    # tens of MiB, so the new one is still shorter at the next poll.
    log.write_text("before" * 20 + "\n")
    lines = read_log_file(log, None, follow=True)
    assert await anext(lines) == "before" * 20
    with log.open("a") as out:
        out.write("partial")
    rotate(tmp_path, max_bytes=1, backups=1)
    log.write_text("after rotation\n")
    async with asyncio.timeout(5):
        assert await anext(lines) == "after rotation"
    await lines.aclose()
