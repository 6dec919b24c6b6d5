"""The package layout of docs/architecture.md, checked from the source (ast; nothing is
imported): imports point one way, from a stage to the stages below it, and no module
imports itself back through another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ragchat"

# Lowest first; a module may import from its own stage and the stages before it. The
# foundation modules are the top-level ones (errors, records, config, ...).
STAGES = ("foundation", "index", "retrieval", "ingest", "generation", "answer", "eval", "cli")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _stage(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()):
        return parts[1]
    return "foundation"


def import_graph() -> dict[str, set[str]]:
    """module -> the ragchat modules it imports (at any depth: lazy imports count)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "ragchat":
                    found = [f"ragchat.{a.name}" for a in node.names]
                    targets.update(f for f in found if f in modules)
                elif node.module.startswith("ragchat."):
                    targets.add(node.module)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.startswith("ragchat."))
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def test_every_module_belongs_to_a_documented_stage() -> None:
    stages = {_stage(m) for m in import_graph()}
    assert stages <= set(STAGES), stages - set(STAGES)


def test_imports_point_down_the_stages() -> None:
    wrong = [
        f"{module} ({_stage(module)}) imports {target} ({_stage(target)})"
        for module, targets in sorted(import_graph().items())
        for target in sorted(targets)
        if not module.endswith("__main__")
        and STAGES.index(_stage(target)) > STAGES.index(_stage(module))
    ]
    assert not wrong, "\n".join(wrong)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as a path that starts and ends at the same module."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or ())


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


# Only the console entry points and the `chat` command reach these.
ENTRY_IMPORTERS = {
    "ragchat.cli.main": {"ragchat.__main__", "ragchat.cli.__main__"},
    "ragchat.cli.repl": {"ragchat.cli.answer_commands"},
}


@pytest.mark.parametrize("module", sorted(ENTRY_IMPORTERS))
def test_nothing_else_imports_the_console(module: str) -> None:
    importers = {m for m, targets in import_graph().items() if module in targets}
    assert importers <= ENTRY_IMPORTERS[module], importers - ENTRY_IMPORTERS[module]
