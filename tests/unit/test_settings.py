"""Settings files and sections: every mistake is reported with the key path
a user can find in their file, under the section it belongs to. (The Ray
section's are in tests/integration/test_ray_executor.py: importing Ray here
would start it before the test cluster's loopback setting.)"""

from __future__ import annotations

import pathlib
import re

import pytest

from capstan.sections import SettingsError
from controlplane.settings import Settings, parse_settings
from executors.local.settings import LocalSettings
from executors.registry import load_executor
from executors.ssh.settings import SshSettings

HOST = {"name": "a", "address": "10.0.0.7", "num_cpus": 4}


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"hosts": [{**HOST, "port": 0}]}, "hosts.0.port: Input should be greater than 0"),
        ({"hosts": [{**HOST, "port": 65536}]}, "hosts.0.port: Input should be less than 65536"),
        ({"hosts": [{**HOST, "port": "22"}]}, "hosts.0.port: Input should be a valid integer"),
        ({"hosts": [HOST, {"name": "b"}]}, "hosts.1.address: Field required"),
        ({"hosts": [{**HOST, "num_cpus": True}]}, "hosts.0.num_cpus: Input should be a valid"),
        ({"hosts": [{**HOST, "resources": {"ssd": -1}}]}, "hosts.0.resources.ssd: Input should"),
        ({"hosts": [{**HOST, "colour": "red"}]}, "hosts.0.colour: Extra inputs are not permitted"),
        ({"hosts": [{**HOST, "env": {"1X": "y"}}]}, "hosts.0.env.1X.[key]: String should match"),
        ({"hosts": []}, "hosts: List should have at least 1 item"),
        ({"hosts": [HOST, HOST]}, "hosts: the name 'a' is used twice"),
        ({"hosts": [HOST], "start_timeout_s": float("inf")}, "start_timeout_s: Input should be a"),
    ],
)
def test_ssh_errors_name_the_key_path(config: dict, error: str) -> None:
    with pytest.raises(SettingsError, match=f"^{re.escape(error)}"):
        SshSettings.from_config(config)


def test_ssh_host_defaults() -> None:
    [host] = SshSettings.from_config({"hosts": [{**HOST, "gpu_ids": [0, "1"]}]}).hosts
    assert (host.port, host.python, host.bind_host) == (22, "python3", "10.0.0.7")
    assert host.gpu_ids == ["0", "1"] and host.user


def test_executor_errors_are_placed_under_their_section(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError) as raised:
        load_executor("ssh", {"hosts": [{**HOST, "port": 0}]}, tmp_path)
    assert str(raised.value) == "executors.ssh.hosts.0.port: Input should be greater than 0"


def test_every_wrong_key_is_named_at_once() -> None:
    with pytest.raises(SettingsError) as raised:
        LocalSettings.from_config({"num_cpus": 0, "start_timeout_s": -1})
    assert [path for path, _ in raised.value.problems] == ["num_cpus", "start_timeout_s"]


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"port": 70000}, "port: Input should be less than or equal to 65535"),
        ({"reconcile_interval_s": 0}, "reconcile_interval_s: Input should be greater than 0"),
        ({"executors": {"local": []}}, "executors.local: Input should be a valid dictionary"),
        ({"default_executor": "ray"}, "default executor 'ray' is not configured"),
        ({"replica_host": "0.0.0.0"}, "replica_host: Extra inputs are not permitted"),
    ],
)
def test_control_plane_settings_name_the_key(fields: dict, error: str) -> None:
    with pytest.raises(SettingsError, match=f"^{re.escape(error)}"):
        Settings(**fields)


def test_environment_variables_are_named_when_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPSTAN_PORT", "eighty")
    with pytest.raises(SettingsError, match=r"^CAPSTAN_PORT: Input should be a valid integer"):
        parse_settings([])


def test_flags_win_over_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPSTAN_EXECUTORS", '{"ray": {"address": "auto"}}')
    monkeypatch.setenv("CAPSTAN_EXECUTOR", "ray")
    monkeypatch.setenv("CAPSTAN_PORT", "9000")
    settings = parse_settings(["--port", "9001"])
    assert settings.executors == {"ray": {"address": "auto"}}
    assert (settings.default_executor, settings.port) == ("ray", 9001)


def test_package_limits_come_from_flags_and_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CAPSTAN_PACKAGE_GRACE_S", "60")
    settings = parse_settings(["--max-package-bytes", "1024"])
    assert (settings.max_package_bytes, settings.package_grace_s) == (1024, 60.0)
    assert parse_settings([]).max_package_bytes == 100 << 20
