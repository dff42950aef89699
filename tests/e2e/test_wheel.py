"""The package as a user installs it (issue 16): the wheel is built, installed ALONE into a fresh venv (its own
declared dependencies from the package index, no test extras, no source tree on the path), and its
`vastfleet --help`, `vastfleet sim serve` and `vastfleet demo --jobs 1 --preemptions 1` run from a
directory outside the checkout. A runtime import missing from pyproject.toml, or a file the demo reads
from the source tree, fails here.

Slow (a venv and its dependencies, then a demo): about two minutes, most of it pip."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import clean_env, free_port, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str | Path], env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.timeout(900)
def test_the_wheel_installs_alone_and_runs_from_outside_the_checkout(tmp_path: Path) -> None:
    env = clean_env(HOME=str(tmp_path / "home"), XDG_DATA_HOME=str(tmp_path / "data"))
    env.pop("PYTHONPATH", None)  # the tests run with the checkout's src on it: the venv must not see it
    env.pop("VIRTUAL_ENV", None)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", tmp_path / "dist", ROOT],
        env, elsewhere, 600)
    wheel = next((tmp_path / "dist").glob("vastfleet-*.whl"))
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], env, elsewhere, 120)
    bin_dir = venv / "bin"
    run([bin_dir / "python", "-m", "pip", "install", "--quiet", wheel], env, elsewhere, 600)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    where = run([bin_dir / "python", "-c", "import vastfleet; print(vastfleet.__file__)"], env, elsewhere, 60)
    assert str(venv) in where.stdout and str(ROOT) not in where.stdout

    helped = run([bin_dir / "vastfleet", "--help"], env, elsewhere, 60)
    assert "Usage: vastfleet" in helped.stdout and "demo" in helped.stdout

    port = free_port()
    sim = subprocess.Popen([bin_dir / "vastfleet", "sim", "serve", "--port", str(port), "--quiet-market",
                            "--workdir", tmp_path / "sim"], env=env, cwd=elsewhere, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        answered = wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/sim/v1/state", timeout=2,
                                              headers={"Authorization": "Bearer sim-key"}),
                            timeout=60, what="the simulator installed from the wheel")
        assert answered.status_code == 200 and answered.json()
    finally:
        sim.send_signal(signal.SIGTERM)
        out, _ = sim.communicate(timeout=30)
    assert sim.returncode == 0 and "Traceback" not in out, out

    demo = run([bin_dir / "vastfleet", "demo", "--jobs", "1", "--preemptions", "1", "--json"], env, elsewhere, 400)
    summary = json.loads(demo.stdout.strip().splitlines()[-1])
    assert summary["succeeded"] == 1 and summary["preemptions_injected"] == 1, summary
    assert summary["steps_lost"] == 0 and summary["instances_left_running"] == 0
