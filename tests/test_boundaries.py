"""The layering of DESIGN.md, checked on every module's imports (kopf-style contracts, with the AST)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "vastfleet"
# Command-line entry points may start the simulator or the replay engine; nothing else may import `sim`.
SIM_CALLERS = {"cli.py", "demo.py", "sweeps/demo.py", "scheduler/bench_cli.py"}


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


@pytest.mark.parametrize("path", modules(), ids=rel)
def test_only_entry_points_import_the_simulator(path: Path) -> None:
    if rel(path).startswith("sim/") or rel(path) in SIM_CALLERS:
        return
    assert not {m for m in imports_of(path) if m == "vastfleet.sim" or m.startswith("vastfleet.sim.")}


@pytest.mark.parametrize("path", modules("scheduler/policy"), ids=rel)
def test_policy_is_pure(path: Path) -> None:
    banned = ("redis", "rq", "vastai", "boto3", "httpx", "requests", "fastapi", "vastfleet.queue",
              "vastfleet.market.vast", "vastfleet.api", "vastfleet.storage", "socket", "subprocess")
    found = {m for m in imports_of(path) if m.startswith(banned) and not m.startswith("vastfleet.market.protocol")}
    assert not found, f"{rel(path)} does I/O through {found}"


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
