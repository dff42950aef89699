"""The package stands on its own (issue 16): every package the code imports is a declared dependency, and
what `vastfleet demo` reads ships inside the package, equal to the copy users read in `examples/`. The
wheel itself is installed alone and run in `tests/e2e/test_wheel.py`."""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import tomllib

import vastfleet
from vastfleet import demo
from vastfleet.examples import example_path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(vastfleet.__file__).parent


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"]) + [d for extra, deps in project["optional-dependencies"].items()
                                             if extra != "test" for d in deps]
    return {_normal(re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0]) for spec in specs}


def _imported_modules() -> set[str]:
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "vastfleet"}


def test_every_package_the_code_imports_is_a_declared_dependency() -> None:
    by_module = metadata.packages_distributions()
    declared = _declared()
    missing = {}
    for module in sorted(_imported_modules()):
        dists = {_normal(d) for d in by_module.get(module, [])}
        if module == "ray" and "ray" in declared:  # the optional extra; imported only where it runs
            continue
        if not dists & declared:
            missing[module] = sorted(dists) or ["(not installed here)"]
    assert not missing, f"imported but not declared in pyproject.toml's dependencies: {missing}"


def test_the_demo_example_is_package_data_equal_to_the_users_copy() -> None:
    shipped = example_path("count.yaml")
    assert shipped.is_file() and PACKAGE in shipped.parents, "inside the package, so a wheel carries it"
    assert demo.EXAMPLE == shipped
    assert shipped.read_text() == (ROOT / "examples" / "count.yaml").read_text(), (
        "examples/count.yaml is the users' copy of src/vastfleet/examples/count.yaml: change both")
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "**/*.yaml" in package_data["vastfleet"]
