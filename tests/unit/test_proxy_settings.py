"""The proxy's request_timeout_s: from its flag, else CAPSTAN_REQUEST_TIMEOUT_S
(how `capstan start --request-timeout-s` hands it down), checked at start-up."""

from __future__ import annotations

import pytest

from proxy.__main__ import parse_settings

BASE = ["--control-plane", "127.0.0.1:1"]


def test_no_timeout_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAPSTAN_REQUEST_TIMEOUT_S", raising=False)
    assert parse_settings(BASE).request_timeout_s is None


def test_the_environment_gives_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPSTAN_REQUEST_TIMEOUT_S", "2.5")
    assert parse_settings(BASE).request_timeout_s == 2.5
    assert parse_settings([*BASE, "--request-timeout-s", "7"]).request_timeout_s == 7.0


@pytest.mark.parametrize("value", ["0", "-1", "86401", "inf", "nan"])
def test_out_of_range_is_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAPSTAN_REQUEST_TIMEOUT_S", raising=False)
    with pytest.raises(ValueError, match="request_timeout_s must be > 0 and at most 86400"):
        parse_settings([*BASE, "--request-timeout-s", value])
