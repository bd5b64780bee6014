"""The project's modules import one another without a cycle, counting imports inside functions (commands.gather and
commands.sweep once imported each other that way)."""

import ast

import networkx as nx

from .conftest import ROOT

PACKAGES = ("commands", "stages")


def module_name(path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def project_imports(path) -> set[str]:
    """The project modules `path` imports anywhere in it (`from a import b` counts a.b when a.b is a module)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    known = {module_name(p) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m in known} - {module_name(path)}


def test_no_import_cycle_between_the_projects_modules():
    graph = nx.DiGraph()
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            graph.add_node(module_name(path))
            graph.add_edges_from((module_name(path), m) for m in project_imports(path))
    # a package's __init__ importing its own submodules is how packages are built, not a cycle of design
    graph.remove_edges_from([(a, b) for a, b in graph.edges if b.startswith(a + ".")])
    assert list(nx.simple_cycles(graph)) == []
    assert ("commands.sweep", "commands.compose") in graph.edges  # the check sees imports (a check of the check)
