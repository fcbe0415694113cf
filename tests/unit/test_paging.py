"""take_page: which items make a page, and where the next one starts."""

import pytest

from capstan.errors import InvalidSpec
from controlplane.paging import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    decode_token,
    encode_token,
    take_page,
)

# (id, size in bytes): the size function reads the second element.
ITEMS = [("a", 10), ("b", 10), ("c", 10), ("d", 10), ("e", 10)]


def _page(page_size: int, after: str | None, budget: int = 1 << 20, items=ITEMS):
    token = "" if after is None else encode_token(after)
    records = [(i, (i, s)) for i, s in items]
    page = take_page(
        records, tuple, lambda x: x[1], page_size=page_size, page_token=token, budget_bytes=budget
    )
    next_after = decode_token(page.next_page_token)
    return [i for i, _ in page.items], next_after


CASES = [
    # page_size, after, budget, ids given, the id the next page starts after
    (2, None, 1 << 20, ["a", "b"], "b"),
    (2, "b", 1 << 20, ["c", "d"], "d"),
    (2, "d", 1 << 20, ["e"], None),
    (5, None, 1 << 20, ["a", "b", "c", "d", "e"], None),  # exactly fits: no empty page
    (0, None, 1 << 20, ["a", "b", "c", "d", "e"], None),  # 0: the default
    (10, "e", 1 << 20, [], None),  # past the end
    (10, "bb", 1 << 20, ["c", "d", "e"], None),  # after an id deleted since
    (10, None, 32, ["a", "b"], "b"),  # the byte budget cuts first (10 + 6 each)
    (10, "b", 32, ["c", "d"], "d"),
    (10, None, 1, ["a"], "a"),  # one item always, even over the budget
]


@pytest.mark.parametrize(("size", "after", "budget", "ids", "next_after"), CASES)
def test_page(size: int, after: str | None, budget: int, ids: list, next_after) -> None:
    assert _page(size, after, budget) == (ids, next_after)


def test_an_oversized_item_gets_a_page_of_its_own() -> None:
    items = [("a", 10), ("b", 1000), ("c", 10)]
    assert _page(10, None, 100, items) == (["a"], "a")
    assert _page(10, "a", 100, items) == (["b"], "b")
    assert _page(10, "b", 100, items) == (["c"], None)


def test_an_insert_before_the_token_is_not_given_and_shifts_nothing() -> None:
    first, after = _page(2, None)
    later = [("a", 10), ("aa", 10), *ITEMS[1:]]  # "aa" arrived between pages
    assert (first, _page(10, after, items=later)) == (["a", "b"], (["c", "d", "e"], None))


def test_default_and_maximum_page_size() -> None:
    many = [(f"{n:05}", 1) for n in range(MAX_PAGE_SIZE + 5)]
    assert len(_page(0, None, items=many)[0]) == DEFAULT_PAGE_SIZE
    assert len(_page(MAX_PAGE_SIZE + 1, None, items=many)[0]) == MAX_PAGE_SIZE


def test_the_token_is_opaque_but_round_trips_any_id() -> None:
    for last in ["a", "app.Model-1", "ünïcode.x", ""]:
        token = encode_token(last)
        assert last not in token or not last
        assert decode_token(token) == last


@pytest.mark.parametrize("token", ["not base64!", "YWJj", "%%%", "\u00e9", "//8="])
def test_a_malformed_token_is_invalid_and_names_page_token(token: str) -> None:
    with pytest.raises(InvalidSpec, match="page_token") as raised:
        take_page(iter(()), str, len, page_size=10, page_token=token)
    assert raised.value.field == "page_token"


def test_a_negative_page_size_names_page_size() -> None:
    with pytest.raises(InvalidSpec, match="page_size") as raised:
        take_page(iter(()), str, len, page_size=-1, page_token="")
    assert raised.value.field == "page_size"


def test_only_records_after_the_token_and_in_the_page_are_built() -> None:
    built: list[str] = []

    def build(record: str) -> str:
        built.append(record)
        return record

    records = [(i, i) for i, _ in ITEMS]
    page = take_page(records, build, len, page_size=2, page_token=encode_token("a"))
    assert (page.items, built) == (("b", "c"), ["b", "c"])
