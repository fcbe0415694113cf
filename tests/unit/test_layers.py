"""Imports point one way: core < executors < controlplane, core < proxy, and
the SDK, CLI and launcher (the rest of `capstan`) on top.

The core (capstan.errors, capstan.channels, capstan.defaults and the generated
capstan.v1 and capstan.internal.v1) imports only the standard library and third-party packages, so
every package may import it without loading the SDK. The walk reads every
import statement, at module level or inside a function, since a lazy import is
still a dependency.
"""

from __future__ import annotations

import ast
import itertools
import pathlib
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Iterator, Mapping
from typing import NamedTuple

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Where each top-level package's source lives.
SOURCES = {
    "capstan": ROOT / "clients" / "python" / "capstan",
    "controlplane": ROOT / "controlplane",
    "executors": ROOT / "executors",
    "proxy": ROOT / "proxy",
}
CORE = {
    "capstan",
    "capstan.errors",
    "capstan.channels",
    # Chunk and batch sizes both ends of an Exchange stream keep to.
    "capstan.framing",
    "capstan.defaults",
    "capstan.v1",
    "capstan.internal",
    "capstan.internal.v1",
    # Python values to and from the protos' JSON (google.protobuf.Value).
    "capstan.json_values",
    # Shared by the SDK and the replica worker, stdlib (and lazily FastAPI)
    # only: the replica context user code reads, and FastAPI view binding.
    "capstan.context",
    "capstan.fastapi_views",
    # Settings sections (pydantic) whose errors name the key path, for the
    # control plane's settings and every executor's.
    "capstan.sections",
    # User-defined metrics (prometheus_client): defined by user code through
    # the SDK, exported by the replica worker.
    "capstan.metrics",
    # How every process reaches replicas and serves TLS: the cluster secret
    # and CA, the metadata guard on servers.
    "capstan.links",
    "capstan.tls",
    "capstan.call_guard",
    # Reflection (v1 and v1alpha) on every server.
    "capstan.reflection",
}
# Which layers each layer may import. The SDK is the top: it may import all.
ALLOWED = {
    "core": {"core"},
    "executors": {"core", "executors"},
    "proxy": {"core", "proxy"},
    "controlplane": {"core", "executors", "controlplane"},
    "sdk": {"core", "executors", "controlplane", "proxy", "sdk"},
}
# The control plane knows the Executor interface and how plugins are found,
# never a concrete executor.
CONTROLPLANE_SEES_OF_EXECUTORS = {
    "executors",
    "executors.base",
    "executors.options",  # the validated replica options a LaunchSpec carries
    "executors.log_file",  # merging replicas' log lines, as executors merge stdout and stderr
    "executors.registry",
}


# Generated packages: core, and not walked (protoc writes their imports).
_GENERATED = ("capstan.v1", "capstan.internal")


class Import(NamedTuple):
    importer: str
    imported: str
    line: int

    def __str__(self) -> str:
        return f"{self.importer} (line {self.line}) imports {self.imported}"


def layer_of(module: str) -> str:
    """The layer a module belongs to; a top-level name outside Capstan (say,
    `tests`) is its own layer, which no production layer may import."""
    if module in CORE or module.startswith(_GENERATED):
        return "core"
    top = module.partition(".")[0]
    return "sdk" if top == "capstan" else top


def module_files() -> dict[str, pathlib.Path]:
    """Every Capstan module by dotted name, except generated code."""
    modules = {}
    for top, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = [top, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join(parts)
            if not name.startswith(_GENERATED):
                modules[name] = path
    return modules


def imports_of(source: str, module: str, known: Iterable[str]) -> Iterator[Import]:
    """Every Capstan (or `tests`) module that `module`'s source imports, at any
    depth. `from pkg import name` counts as importing `pkg.name` when that is a
    module, else `pkg`."""
    known = set(known)
    package = module if module in SOURCES or _is_package(module) else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target.partition(".")[0] in (*SOURCES, "tests"):
                yield Import(module, target, node.lineno)


def _is_package(module: str) -> bool:
    top, _, rest = module.partition(".")
    return (SOURCES[top].joinpath(*rest.split(".")) / "__init__.py").exists() if rest else True


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def all_imports() -> list[Import]:
    modules = module_files()
    found = []
    for name, path in sorted(modules.items()):
        found.extend(imports_of(path.read_text(), name, modules))
    return found


def is_allowed(edge: Import) -> bool:
    importer, imported = layer_of(edge.importer), layer_of(edge.imported)
    if imported not in ALLOWED[importer]:
        return False
    if importer == "controlplane" and imported == "executors":
        return edge.imported in CONTROLPLANE_SEES_OF_EXECUTORS
    return True


def find_cycle(edges: Mapping[str, set[str]]) -> list[str] | None:
    """A cycle in a directed graph as [a, b, ..., a], or None."""
    state: dict[str, str] = {}  # "open" while on the path, "done" after

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, nxt])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_no_layer_imports_a_layer_above_it() -> None:
    edges = all_imports()
    assert len(edges) > 100, "the walk found almost no imports: is it reading the tree?"
    violations = [str(edge) for edge in edges if not is_allowed(edge)]
    assert not violations, "imports against the layering:\n" + "\n".join(violations)


def test_layers_form_no_cycle() -> None:
    graph: dict[str, set[str]] = {}
    witness: dict[tuple[str, str], Import] = {}
    for edge in all_imports():
        importer, imported = layer_of(edge.importer), layer_of(edge.imported)
        if importer != imported:
            graph.setdefault(importer, set()).add(imported)
            witness.setdefault((importer, imported), edge)
    cycle = find_cycle(graph)
    assert cycle is None, "layers import each other in a cycle:\n" + "\n".join(
        str(witness[pair]) for pair in itertools.pairwise(cycle)
    )


def test_importing_the_errors_loads_nothing_else_of_capstan() -> None:
    probe = (
        "import capstan.errors, sys; print(sorted(m for m in sys.modules if m.startswith("
        "('capstan', 'controlplane', 'executors', 'proxy', 'cloudpickle'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    loaded = ast.literal_eval(out)
    assert "capstan.errors" in loaded
    assert [m for m in loaded if layer_of(m) != "core"] == []


def test_the_walk_sees_lazy_relative_and_from_imports() -> None:
    source = textwrap.dedent(
        """
        import json
        from capstan import errors, serve
        from . import http

        def later():
            from controlplane.server import run_control_plane
            import proxy.router
        """
    )
    known = {"capstan.errors", "capstan.serve", "proxy.http", "proxy.router"}
    found = [(i.imported, i.line) for i in imports_of(source, "proxy.dataplane", known)]
    assert sorted(found) == [
        ("capstan.errors", 3),
        ("capstan.serve", 3),
        ("controlplane.server", 7),
        ("proxy.http", 4),
        ("proxy.router", 8),
    ]
    assert [str(e) for e in imports_of(source, "proxy.dataplane", known) if not is_allowed(e)] == [
        "proxy.dataplane (line 3) imports capstan.serve",
        "proxy.dataplane (line 7) imports controlplane.server",
    ]


def test_find_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"sdk": {"core"}, "core": {"sdk"}}) == ["core", "sdk", "core"]
