"""The code's shape, checked: no import cycles anywhere (function-level imports included), every
module at most 300 lines, agents that only move bytes. The layer contract itself (cli -> agents
-> worker | rebuild -> kafka -> core; a core without faust or Kafka clients) is import-linter's,
in pyproject.toml, run by .ci/run and by the last test here."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGES = ("streams", "agents")
MAX_MODULE_LINES = 300
MAX_AGENT_LINES = 15


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Every project module `path` imports, at module level or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        out |= {n for n in names if n in known}
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:  # ~130 modules: far within Python's recursion limit
        if v not in index:
            visit(v)
    return found


def test_cycles_finds_a_cycle():  # the checker itself
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    known = modules()
    # a package's own __init__ importing its modules is how packages work, not a cycle
    graph = {m: {i for i in imports(p, known) if not (p.name == "__init__.py" and i.startswith(m + "."))}
             for m, p in known.items()}
    assert cycles(graph) == []


def test_every_module_is_at_most_300_lines():
    long = {str(p.relative_to(ROOT)): n for p in modules().values()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_agents_are_thin():
    """Each agent function (an `async def` under @app.agent) is at most 15 lines."""
    long = {}
    for path in (ROOT / "agents").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.AsyncFunctionDef) and any("agent" in ast.unparse(d) for d in node.decorator_list):
                if (n := node.end_lineno - node.lineno + 1) > MAX_AGENT_LINES:
                    long[f"{path.name}:{node.name}"] = n
    assert long == {}


def test_the_import_contract_holds():
    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(linter)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "3 kept, 0 broken" in result.stdout


def test_every_counter_a_module_increments_is_declared_and_so_exported_from_the_start():
    """/metrics promises every counter from the start, with its help (docs/http-api.md): three the
    list window and direct ingest added were missing until their first increment (a newcomer's check)."""
    from streams.core.metrics import COUNTERS

    used = set()
    for path in [*ROOT.joinpath("streams").rglob("*.py"), *ROOT.joinpath("agents").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "inc"
                    and node.args and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith(
                        "recstream_")):
                used.add(node.args[0].value)
    assert len(used) > 20 and used <= set(COUNTERS), sorted(used - set(COUNTERS))
