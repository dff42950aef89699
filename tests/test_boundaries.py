"""The layering of DESIGN.md, checked on every module's imports (kopf-style contracts, with the AST)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "vastfleet"


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules(under: str = "") -> list[Path]:
    return sorted((SRC / under).rglob("*.py"))


def rel(path: Path) -> str:
    return path.relative_to(SRC).as_posix()


def test_the_import_linter_contracts_hold() -> None:
    """pyproject.toml's [tool.importlinter] contracts: the agent imports nothing of ours, the product never
    imports the simulator or the replay, the scheduler never the HTTP layer, queue and market not each other,
    the policy no I/O (indirect imports count)."""
    from importlinter.cli import EXIT_STATUS_SUCCESS, lint_imports

    status = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    assert status == EXIT_STATUS_SUCCESS, "a contract is broken: its import chain is printed above"


def test_no_module_imports_itself_back() -> None:
    """No import cycle among our modules (imports made at run time; a type named for mypy only is none)."""
    import grimp

    graph = grimp.build_graph("vastfleet", exclude_type_checking_imports=True, cache_dir=None)
    cycles = [c for c in strongly_connected(graph) if len(c) > 1]
    assert not cycles, cycles


def strongly_connected(graph: Any) -> list[list[str]]:
    """Tarjan's components of the module graph (iterative: the graph is deep)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.find_modules_directly_imported_by(w)))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(sorted(comp))
    return out


def test_the_status_command_loads_neither_the_simulator_nor_uvicorn() -> None:
    """Sub-apps (sim, sweep, bench) are imported when named: a user command starts fast and small."""
    probe = (
        "import sys\n"
        "from vastfleet.cli import app\n"
        "try:\n"
        "    app(['status'], standalone_mode=False)\n"
        "except Exception:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith(('vastfleet.sim', 'uvicorn', 'optuna', 'ray'))))\n"
    )
    env = {**os.environ, "VASTFLEET_URL": "http://127.0.0.1:9", "VASTFLEET_TOKEN": "t" * 32}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60,
                          check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr


@pytest.mark.parametrize("path", modules("spec"), ids=rel)
def test_spec_imports_nothing_of_the_project_but_errors(path: Path) -> None:
    ours = {m for m in imports_of(path) if m.startswith("vastfleet")}
    assert ours <= {"vastfleet.errors"} | {m for m in ours if m.startswith("vastfleet.spec")}


@pytest.mark.parametrize("path", modules("market"), ids=rel)
def test_market_knows_no_redis_and_no_jobs(path: Path) -> None:
    found = {m for m in imports_of(path) if m.startswith(("redis", "rq", "vastfleet.queue", "vastfleet.scheduler"))}
    assert not found


@pytest.mark.parametrize("path", modules("agent"), ids=rel)
def test_agent_package_is_standard_library_only(path: Path) -> None:
    outside = {m.split(".")[0] for m in imports_of(path)} - set(sys.stdlib_module_names) - {"__future__"}
    assert not outside
