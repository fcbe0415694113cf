"""RouteTable: longest prefix on whole path segments."""

import pytest

from proxy.routes import Route, RouteTable

TABLE = {"/": "root", "/api": "api", "/api/v2": "v2", "/static/": "static"}

CASES = [
    ("/", "/", "root"),
    ("", "/", "root"),
    ("/other", "/", "root"),
    ("/api", "/api", "api"),
    ("/api/", "/api", "api"),
    ("/api/x", "/api", "api"),
    ("/api/x/y/z", "/api", "api"),
    ("/apix", "/", "root"),
    ("/api/v2", "/api/v2", "v2"),
    ("/api/v2/", "/api/v2", "v2"),
    ("/api/v2/items/1", "/api/v2", "v2"),
    ("/api/v20", "/api", "api"),
    ("/static", "/static", "static"),
    ("/static/app.js", "/static", "static"),
    ("//api", "/", "root"),
]


@pytest.mark.parametrize(("path", "prefix", "deployment"), CASES)
def test_longest_whole_segment_prefix_wins(path: str, prefix: str, deployment: str) -> None:
    assert RouteTable(TABLE).match(path) == Route(prefix, deployment)


@pytest.mark.parametrize("path", ["/", "/apix", "/ap", "/other/api"])
def test_without_a_catch_all_unmatched_paths_have_no_route(path: str) -> None:
    assert RouteTable({"/api": "api"}).match(path) is None


def test_empty_table_matches_nothing() -> None:
    assert RouteTable().match("/anything") is None
    assert len(RouteTable()) == 0


def test_as_dict_lists_normalised_prefixes() -> None:
    assert RouteTable(TABLE).as_dict() == {
        "/": "root",
        "/api": "api",
        "/api/v2": "v2",
        "/static": "static",
    }


def test_prefix_must_start_with_slash() -> None:
    with pytest.raises(ValueError, match='"api" must start with "/"'):
        RouteTable({"api": "api"})
