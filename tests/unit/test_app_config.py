"""Building applications from a config file: overrides by deployment name,
versions that follow the code and nothing else, errors that name the line."""

from __future__ import annotations

import pathlib
import re

import pytest

from capstan.app_config import application_specs
from capstan.config_file import parse
from capstan.errors import InvalidSpec
from capstan.json_values import to_python

MODULE = """
from capstan import serve


@serve.deployment(ray_actor_options={"num_cpus": 0.5})
class Model:
    def __call__(self, request):
        return "ok"


app = Model.bind()
"""


@pytest.fixture
def folder(tmp_path: pathlib.Path, request: pytest.FixtureRequest) -> tuple[pathlib.Path, str]:
    module = f"cfg_{request.node.name.replace('[', '_').replace(']', '').replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(MODULE)
    return tmp_path, module


def config(folder: pathlib.Path, module: str, deployment: str = "", env: str = "") -> str:
    return (
        "applications:\n"
        "- name: a\n"
        f"  import_path: {module}:app\n"
        f"  runtime_env: {{working_dir: {folder}{env}}}\n"
        "  deployments:\n"
        "  - name: Model\n"
        f"    {deployment or 'num_replicas: 2'}\n"
    )


def build(text: str):
    (spec,) = application_specs(parse(text, "app.yaml"))
    return spec


def test_overrides_and_code_by_import_path(folder) -> None:
    path, module = folder
    spec = build(config(path, module, "user_config: {k: 1}"))
    (model,) = spec.deployments
    assert to_python(model.user_config) == {"k": 1}
    assert model.code.import_path == f"{module}:Model"  # imported in the working_dir
    assert model.replica_options.num_cpus == 0.5  # the code's own, kept
    assert model.replica_options.runtime_env.working_dir == str(path)


def test_the_version_follows_the_code_only(folder) -> None:
    path, module = folder
    first = build(config(path, module)).deployments[0].version
    assert build(config(path, module, "num_replicas: 5")).deployments[0].version == first
    assert build(config(path, module, "user_config: 7")).deployments[0].version == first
    (path / f"{module}.py").write_text(MODULE + "\n# edited\n")
    assert build(config(path, module)).deployments[0].version != first


def test_an_override_of_an_unknown_deployment(folder) -> None:
    path, module = folder
    text = config(path, module).replace("- name: Model", "- name: Nope")
    with pytest.raises(
        InvalidSpec, match=re.escape("app.yaml:6: applications[0].deployments[0].name")
    ):
        build(text)


def test_a_runtime_env_capstan_lacks(folder) -> None:
    path, module = folder
    with pytest.raises(InvalidSpec, match=re.escape("runtime_env.py_modules is not supported")):
        build(config(path, module, env=", py_modules: [x]"))
    remote = config(path, module).replace(str(path), "https://example.com/app.zip")
    with pytest.raises(InvalidSpec, match="remote working_dir"):
        build(remote)
