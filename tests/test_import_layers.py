"""The import graph: no cycle between modules, and no import from a lower layer to a higher one.

Read from the source: every ``import``, at the top of a module or inside a function, so a lazy
import does not hide a cycle. An import under ``if TYPE_CHECKING:`` never runs, so it makes no
cycle; it still names a module, so it counts for the layers. The layers, lowest first:

- ``executors``, ``network``: running jobs on this machine; peers, QUIC, the DHT;
- ``orchestrator``: the node's records and rules (database, services, workflows, plans, policy);
- ``flows``: running executions (and ``flows.client``, the client side, which imports nothing of
  the server side);
- ``api``: the HTTP edge;
- the composition roots, which may import anything: ``orchestrator.node`` (the node),
  ``orchestrator.worker`` (a Prefect worker's flow runs), ``orchestrator.assembly`` (what those
  two build alike), ``orchestrator.serve`` and ``orchestrator.cli`` (the processes).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("executors", "network", "orchestrator", "flows", "api")
COMPOSITION_ROOTS = {"orchestrator.assembly", "orchestrator.node", "orchestrator.worker",
                     "orchestrator.serve", "orchestrator.cli"}
LAYER = {"executors": 0, "network": 0, "orchestrator": 1, "flows": 2, "api": 3}
# What the client side may use of the lower layers: settings, keys and tokens, the node's
# address file, and the pure wiring rules; nothing that needs the server's dependencies.
CLIENT_MAY_IMPORT = {"orchestrator.address_file", "orchestrator.auth", "orchestrator.config",
                     "orchestrator.errors", "orchestrator.keys", "orchestrator.states",
                     "orchestrator.wiring"}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _type_checking_only(tree: ast.Module) -> set[int]:
    """The ids of the import statements inside ``if TYPE_CHECKING:`` blocks."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) \
                and node.test.id == "TYPE_CHECKING":
            found.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return found


def imports(path: Path, known: dict[str, Path], *, typing_too: bool) -> Iterator[str]:
    """The project modules ``path`` imports (``from package import module`` names the module);
    with ``typing_too``, also those imported for type checking only."""
    tree = ast.parse(path.read_text())
    skipped = set() if typing_too else _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known
                       else node.module for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target:
                yield target


def graph(*, typing_too: bool = True) -> dict[str, set[str]]:
    known = modules()
    return {name: set(imports(path, known, typing_too=typing_too)) - {name}
            for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, successors = work[-1]
            for w in successors:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def layer(module: str) -> int:
    if module in COMPOSITION_ROOTS:
        return 99
    return LAYER[module.split(".")[0]]


def test_no_import_cycle() -> None:
    assert cycles(graph(typing_too=False)) == []


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_from_a_lower_layer_to_a_higher_one() -> None:
    upward = sorted(f"{a} -> {b}" for a, targets in graph().items() for b in targets
                    if layer(b) > layer(a))
    assert upward == []


def test_the_client_side_imports_nothing_of_the_server_side() -> None:
    wrong = sorted(f"{a} -> {b}" for a, targets in graph().items() if a.startswith("flows.client")
                   for b in targets if not b.startswith("flows.client")
                   and b not in CLIENT_MAY_IMPORT)
    assert wrong == []


def test_only_flows_on_prefect_imports_prefect() -> None:
    """Prefect sits behind ``flows.flow_engine``: its imports live in one subpackage."""
    importers = set()
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "prefect" or n.startswith("prefect.") for n in names):
                importers.add(name)
    assert importers and all(m.startswith("flows.on_prefect.") for m in importers), importers
