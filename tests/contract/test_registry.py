"""Executors are found by entry-point name, a wrong name says what exists,
and a plugin that cannot load is named wherever it is loaded."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest
from scripted_executor import ScriptedExecutor

from executors.base import Executor
from executors.local import LocalExecutor
from executors.registry import PluginError, executor_names, load_executor

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
BROKEN_IMPORT = "RuntimeError: the driver this plugin needs is missing"
BROKEN_NAMED = r"executor 'broken' \(broken_plugin:BrokenExecutor\) failed to load"


def test_local_is_registered_and_loads(tmp_path: pathlib.Path) -> None:
    assert "local" in executor_names()
    executor = load_executor("local", {"num_cpus": 2}, tmp_path)
    assert isinstance(executor, LocalExecutor) and isinstance(executor, Executor)


def test_the_scripted_test_plugin_loads_by_name_like_any_plugin(tmp_path: pathlib.Path) -> None:
    assert "scripted" in executor_names()
    assert isinstance(load_executor("scripted", {}, tmp_path), ScriptedExecutor)


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


@pytest.fixture
def broken_plugin(tmp_path: pathlib.Path) -> pathlib.Path:
    """A folder that, on sys.path, holds an installed plugin `broken` (its
    dist-info and entry point) whose module raises when imported."""
    site = tmp_path / "site"
    dist_info = site / "capstan_broken_plugin-0.1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: capstan-broken-plugin\nVersion: 0.1\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[capstan.executors]\nbroken = broken_plugin:BrokenExecutor\n"
    )
    error, message = BROKEN_IMPORT.split(": ")
    (site / "broken_plugin.py").write_text(f"raise {error}({message!r})\n")
    return site


def test_a_plugin_that_fails_to_import_is_a_plugin_error_naming_it(
    broken_plugin: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(broken_plugin)
    assert "broken" in executor_names()
    with pytest.raises(PluginError, match=f"{BROKEN_NAMED}: {BROKEN_IMPORT}") as caught:
        load_executor("broken", {}, tmp_path)
    assert not caught.value.retryable


def test_control_plane_start_up_fails_naming_a_broken_plugin(
    broken_plugin: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    path = os.pathsep.join([str(broken_plugin), str(REPO_ROOT)])
    command = [sys.executable, "-m", "controlplane", "--state-dir", str(tmp_path / "state")]
    command += ["--port", "0", "--executor", "broken"]
    done = subprocess.run(
        command, env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0, done.stdout
    # What the operator reads when start-up fails: the plugin, by name.
    assert re.search(f"{BROKEN_NAMED}: {BROKEN_IMPORT}", done.stderr), done.stderr[-2000:]
