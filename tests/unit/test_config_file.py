"""Ray Serve config files: validated against Ray's shape, every error named
by file, line and field."""

from __future__ import annotations

import pytest

from capstan.config_file import parse
from capstan.config_schema import ignored
from capstan.errors import InvalidSpec

GOOD = """\
proxy_location: EveryNode
http_options:
  port: 8000
applications:
- name: shop
  route_prefix: /shop
  import_path: shop:app
  args: {size: 2}
  runtime_env:
    env_vars: {REGION: eu}
  deployments:
  - name: Shop
    num_replicas: auto
    max_replicas_per_node: 1
    ray_actor_options:
      num_cpus: 0.5
      memory: 100
"""


def test_a_ray_file_is_read() -> None:
    loaded = parse(GOOD, "app.yaml")
    (app,) = loaded.config.applications
    assert (app.name, app.route_prefix, app.import_path, app.args) == (
        "shop", "/shop", "shop:app", {"size": 2},
    )  # fmt: skip
    assert app.deployments[0].num_replicas == "auto"
    assert loaded.where(("applications", 0, "deployments", 0, "name")) == (
        "app.yaml:12: applications[0].deployments[0].name"
    )


def test_what_capstan_ignores_is_named() -> None:
    paths = ignored(parse(GOOD, "app.yaml").config)
    assert sorted(paths, key=repr) == sorted(
        [
            ("proxy_location",),
            ("http_options",),
            ("applications", 0, "deployments", 0, "max_replicas_per_node"),
            ("applications", 0, "deployments", 0, "ray_actor_options", "memory"),
        ],
        key=repr,
    )


ERRORS = [
    (
        "an unknown field",
        GOOD.replace("num_replicas: auto", "num_replica: 2"),
        "app.yaml:13: applications[0].deployments[0].num_replica: Extra inputs are not permitted",
    ),
    (
        "a wrong type",
        GOOD.replace("num_cpus: 0.5", "num_cpus: lots"),
        "app.yaml:16: applications[0].deployments[0].ray_actor_options.num_cpus: Input should "
        "be a valid number",
    ),
    (
        "a missing field, named under its parent",
        GOOD.replace("  import_path: shop:app\n", ""),
        "app.yaml:5: applications[0].import_path: Field required",
    ),
    ("not YAML", "applications: [\n", "app.yaml:2: not valid YAML"),
    ("not a mapping", "- a\n", "app.yaml:1: the config must be a mapping"),
]


@pytest.mark.parametrize(("text", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_name_line_and_field(text: str, message: str) -> None:
    with pytest.raises(InvalidSpec) as raised:
        parse(text, "app.yaml")
    assert message in str(raised.value)
