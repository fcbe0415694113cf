"""AIP-158 paging for the List RPCs: which items make one page, and the
opaque token that says where the next page starts. Pure: no I/O.

Items go in ascending order of a unique id, and the token holds the last id
given, so the next page starts after it wherever inserts and deletes have
moved the rest: an item present throughout the listing is given exactly
once. A page stops at `page_size` items or at `budget_bytes` of encoded
messages (a few large specs would otherwise pass gRPC's message limit), but
always holds one item while any remain, so paging never stalls."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from capstan.errors import InvalidSpec

R = TypeVar("R")
T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# Under the 4 MiB that gRPC clients in Go, Node, Ruby and Python accept by
# default (our own accept 64 MiB), so a client generated from the protos
# lists without raising its limit unless one item alone is larger.
PAGE_BUDGET_BYTES = 3 * 1024 * 1024
# A repeated field's tag and length prefix per item, at most.
_ITEM_OVERHEAD_BYTES = 6
_TOKEN_PREFIX = "after:"


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of items and the token of the next ("" when this is the last)."""

    items: tuple[T, ...]
    next_page_token: str


def take_page(
    records: Iterable[tuple[str, R]],
    build: Callable[[R], T],
    size_bytes: Callable[[T], int],
    *,
    page_size: int,
    page_token: str,
    budget_bytes: int = PAGE_BUDGET_BYTES,
) -> Page[T]:
    """The page of items built from `records` ((id, record) pairs, ascending
    by id) that starts after `page_token`. Only records after the token are
    built, up to one past the page."""
    limit = page_limit(page_size)
    after = decode_token(page_token)
    taken: list[T] = []
    last_id, used = "", 0
    for item_id, record in records:
        if after is not None and item_id <= after:
            continue
        if len(taken) >= limit:
            return Page(tuple(taken), encode_token(last_id))
        item = build(record)
        cost = size_bytes(item) + _ITEM_OVERHEAD_BYTES
        if taken and used + cost > budget_bytes:
            return Page(tuple(taken), encode_token(last_id))
        taken.append(item)
        last_id, used = item_id, used + cost
    return Page(tuple(taken), "")


def encode_token(last_id: str) -> str:
    """The token of the page that starts after `last_id`."""
    return base64.urlsafe_b64encode((_TOKEN_PREFIX + last_id).encode()).decode()


def decode_token(token: str) -> str | None:
    """The id a token says to start after; None for the first page."""
    if not token:
        return None
    try:
        text = base64.urlsafe_b64decode(token.encode("ascii")).decode()
    except (UnicodeError, binascii.Error, ValueError):
        text = ""
    if not text.startswith(_TOKEN_PREFIX):
        raise InvalidSpec(
            f"page_token {token[:64]!r} is not one this server gave; pass the "
            "next_page_token of the page before unchanged, or empty for the first page",
            "page_token",
        )
    return text.removeprefix(_TOKEN_PREFIX)


def page_limit(page_size: int) -> int:
    """How many items a page holds at most for a request's `page_size`; a
    caller reads one record more than this to know whether a page follows."""
    if page_size < 0:
        raise InvalidSpec(f"page_size {page_size} must not be negative", "page_size")
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
