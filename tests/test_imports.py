"""No import cycle among the project's modules, counting the imports made inside functions."""

from __future__ import annotations

import ast

from tests.conftest import REPO

PACKAGES = ("collabloop", "generation", "simulate", "annotate_data", "dpo_iteration", "sft")


def project_modules() -> dict[str, set[str]]:
    """module -> the project modules it imports, anywhere in its source."""
    paths = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            paths[name] = path
    graph = {}
    for name, path in paths.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
        graph[name] = {m for m in imported if m in paths and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_among_the_project_modules():
    graph = project_modules()
    assert "collabloop.stage" in graph and "collabloop.stage" in graph["collabloop.cli"]
    assert cycles(graph) == []


def test_every_entry_script_starts_in_a_fresh_interpreter():
    """`python SCRIPT --help` for each entry script: its imports resolve as a user's command finds them (the
    stage tests fork theirs from a warm interpreter, tests/warm.py, where a package missing from the
    install would still import)."""
    import subprocess
    import sys

    scripts = sorted(str(p.relative_to(REPO)) for package in PACKAGES[1:] for p in (REPO / package).glob("*.py")
                     if 'if __name__ == "__main__"' in p.read_text())
    assert "sft/run_sft.py" in scripts and "generation/generate.py" in scripts
    for script in scripts:
        result = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0 and "usage" in result.stdout.lower(), f"{script}:\n{result.stderr[-2000:]}"
