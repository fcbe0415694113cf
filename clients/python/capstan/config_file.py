"""Reads a Ray Serve config file: YAML parsed once for its values and once
for where each value sits (PyYAML's node marks), validated by the models in
`config_schema`, so that every error names the file, the line and the field:

    app.yaml:14: applications[0].deployments[1].num_replicas: Input should be a valid integer
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping

import pydantic
import yaml

from capstan.config_schema import ConfigFile
from capstan.errors import InvalidSpec

Path = tuple[str | int, ...]


@dataclasses.dataclass(frozen=True)
class LoadedConfig:
    """A validated config file and the line of each field in it."""

    config: ConfigFile
    source: str
    lines: Mapping[Path, int]

    def where(self, path: Path) -> str:
        """`file:line: dotted.path` for an error about the field at `path`
        (the line of the nearest enclosing field that the file has)."""
        known = _longest_known(path, self.lines)
        return f"{self.source}:{self.lines.get(known, 1)}: {dotted(path)}"


def read(path: str) -> LoadedConfig:
    """The config file at `path`; InvalidSpec naming line and field if it is
    not YAML or not Ray Serve's format."""
    try:
        text = pathlib.Path(path).read_text()
    except OSError as error:
        raise InvalidSpec(f"cannot read config file {path}: {error.strerror}") from None
    return parse(text, path)


def parse(text: str, source: str) -> LoadedConfig:
    """The config in `text`, read from `source` (a name for messages)."""
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise InvalidSpec(f"{source}:{line}: not valid YAML: {_problem(error)}") from None
    lines = _lines(root, ()) if root is not None else {}
    if not isinstance(data, dict):
        raise InvalidSpec(f"{source}:1: the config must be a mapping with `applications:`")
    try:
        config = ConfigFile.model_validate(data)
    except pydantic.ValidationError as error:
        raise InvalidSpec(_explain(error, source, lines)) from None
    return LoadedConfig(config, source, lines)


def dotted(path: Path) -> str:
    """("applications", 0, "name") as "applications[0].name"."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _explain(error: pydantic.ValidationError, source: str, lines: Mapping[Path, int]) -> str:
    """Every validation error on a line of its own, first the first."""
    messages = []
    for problem in error.errors():
        loc = tuple(problem["loc"])
        known = _longest_known(loc, lines)
        # A missing field is not in the file: name it under its parent. Past
        # the known part, pydantic adds union tags ("int"), not fields.
        shown = loc[: len(known) + 1] if problem["type"] == "missing" else known
        line = lines.get(known, 1)
        messages.append(f"{source}:{line}: {dotted(shown)}: {problem['msg']}")
    return "\n".join(messages)


def _longest_known(path: Path, lines: Mapping[Path, int]) -> Path:
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return path[:end]
    return ()


def _lines(node: yaml.Node, path: Path) -> dict[Path, int]:
    """The 1-based line of every key and list item under `node`."""
    found: dict[Path, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, key.value)
            found[child] = key.start_mark.line + 1
            found |= _lines(value, child)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*path, index)
            found[child] = item.start_mark.line + 1
            found |= _lines(item, child)
    return found


def _problem(error: yaml.YAMLError) -> str:
    return str(getattr(error, "problem", None) or error).strip()
