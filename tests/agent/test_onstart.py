"""The onstart command (size, no secret, runs under /bin/sh) and the agent's boundaries (stdlib, 3.8)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agent.conftest import AGENT
from tests.helpers import clean_env
from vastfleet.agent.onstart import ONSTART_LIMIT, agent_env, build_onstart, travelling_source
from vastfleet.agent.tokens import TokenSigner

AGENT_PACKAGE = AGENT.parent


@pytest.mark.parametrize("compress", [None, True])
def test_onstart_stays_under_16_kb(compress: bool | None) -> None:
    script = build_onstart("https://vastfleet.example.com:8443/base", compress=compress)
    assert len(script.encode()) < ONSTART_LIMIT == 16 * 1024


def test_onstart_refuses_to_grow_past_the_limit() -> None:
    big = "x = 1\n" + "Y = '" + "y" * 20000 + "'\n"  # a comment would not travel: a constant does
    with pytest.raises(ValueError, match="bytes"):
        build_onstart("http://127.0.0.1:1", compress=False, source=big)
    import os

    noise = os.urandom(16000).hex()  # incompressible
    with pytest.raises(ValueError, match="16384"):
        build_onstart("http://127.0.0.1:1", source=f"N = '{noise}'\n")


@pytest.mark.parametrize("url", ["ftp://x", "http://a b", "http://x/'; rm -rf /", "", "http://x/$(id)"])
def test_onstart_refuses_urls_that_are_not_plain(url: str) -> None:
    with pytest.raises(ValueError):
        build_onstart(url)


def test_no_secret_in_onstart_the_token_travels_in_the_instance_env() -> None:
    token = TokenSigner(b"s" * 32).issue("j-abc", 3, "vf-j-abc-e3")
    env = agent_env("http://10.0.0.1:8000", token, "j-abc", 3)
    script = build_onstart("http://10.0.0.1:8000")
    assert env["VASTFLEET_AGENT_TOKEN"] == token
    assert token not in script and "j-abc" not in script
    assert "VASTFLEET_AGENT_TOKEN" not in script  # not even as a name: the agent reads it from its env
    assert build_onstart("http://10.0.0.1:8000") == script  # the same for every job


@pytest.mark.parametrize("compress", [False, True])
def test_onstart_writes_and_runs_the_agent_under_sh(tmp_path: Path, compress: bool) -> None:
    source = AGENT.read_text()
    if not compress:  # the plain heredoc form, with a small stand-in that fits
        source = 'import sys\nprint("agent ran", sys.argv)\nsys.exit(3)\n'
    script = build_onstart("http://127.0.0.1:9", compress=compress, source=source)
    out = subprocess.run(
        ["/bin/sh", "-c", script],
        env=clean_env(VASTFLEET_SIM_WORKSPACE=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    written = tmp_path / ".vastfleet" / "agent.py"
    assert written.read_text() == travelling_source(source)
    if compress:  # the real agent, started without its env: it says what is missing and exits 2
        assert out.returncode == 2 and "VASTFLEET_AGENT_TOKEN" in out.stdout, out.stdout + out.stderr
    else:
        assert out.returncode == 3 and "agent ran" in out.stdout


def _docless(source: str) -> str:
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            body[0].value.value = ""
    return ast.dump(tree)


def test_the_agent_travels_without_comments_and_docstrings_but_line_for_line() -> None:
    source = AGENT.read_text()
    sent = travelling_source(source)
    assert _docless(sent) == _docless(source), "the same program"
    assert sent.count("\n") == source.count("\n"), "every line where it was: errors name the source's lines"
    assert "#" not in "".join(line for line in sent.splitlines() if "'#'" not in line and '"#"' not in line)
    assert len(sent) < 0.9 * len(source)
    tricky = 'def f(x):\n    """doc\n    more"""\n    "".join(x)  # keep\n    return "#"\n'
    assert travelling_source(tricky) == 'def f(x):\n    """\n"""\n    "".join(x)\n    return "#"\n'


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            names.add((node.module or "").split(".")[0])
    return names


@pytest.mark.parametrize("module", ["agent.py", "onstart.py", "tokens.py", "__init__.py"])
def test_agent_package_imports_only_the_standard_library(module: str) -> None:
    foreign = _imports(AGENT_PACKAGE / module) - set(sys.stdlib_module_names) - {"__future__"}
    assert not foreign, f"{module} imports {sorted(foreign)}"


def test_agent_parses_as_python_38() -> None:
    tree = ast.parse(AGENT.read_text(), feature_version=(3, 8))
    # Names of 3.9+ that a 3.8 grammar check cannot see.
    later = {
        "removeprefix",
        "removesuffix",
        "waitstatus_to_exitcode",
        "is_relative_to",
        "cache",
        "pidfd_open",
    }
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not used & later
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            assert not isinstance(node.left, ast.Dict), "dict | dict needs 3.9"
