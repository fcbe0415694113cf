"""Executors are found by entry-point name, and a wrong name says what exists."""

from __future__ import annotations

import pathlib
import re

import pytest

from executors.base import Executor
from executors.local import LocalExecutor
from executors.registry import PluginError, executor_names, load_executor


def test_local_is_registered_and_loads(tmp_path: pathlib.Path) -> None:
    assert "local" in executor_names()
    executor = load_executor("local", {"num_cpus": 2}, tmp_path)
    assert isinstance(executor, LocalExecutor) and isinstance(executor, Executor)


def test_unknown_name_lists_the_known_ones(tmp_path: pathlib.Path) -> None:
    with pytest.raises(
        PluginError, match=r"no executor named 'nomad'; installed executors: .*local"
    ):
        load_executor("nomad", {}, tmp_path)


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"num_cpus": 0}, "num_cpus"),
        ({"gpu_ids": "0,1"}, "gpu_ids"),
        ({"resources": {"tpu": -1}}, "resources.tpu"),
        ({"python": ""}, "python"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_config_names_the_executor_and_key(
    tmp_path: pathlib.Path, config: dict, key: str
) -> None:
    with pytest.raises(ValueError, match=rf"^executors\.local\.{re.escape(key)}: "):
        load_executor("local", config, tmp_path)
