"""`runtime: ray` with real Ray under the real agent, against the real API: two Ray jobs on one host at once
(no port clash; neither attempt's end touches the other's Ray), and a broken Ray install failing the attempt
with Ray's own words under the usual retry rules. Never `ray stop`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agent.conftest import AGENT, AgentApi, booted, count_spec, job_in, output, write_exe
from tests.helpers import wait_for
from vastfleet.spec import JobState

VENV_BIN = Path(sys.executable).parent
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (VENV_BIN / "ray").exists() and not os.environ.get("CI"),
                       reason="the `ray` extra is not installed (pip install -e '.[ray]')"),
]
SMALL = {"RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION": "0.005"}  # ~100 MB of object store on a 24 GB box
# A Ray job that holds an actor until the test drops a `go` file in its workdir, then uses it again.
HOLD = """import os, time, ray
ray.init()
@ray.remote(num_cpus=0)
class Echo:
    def pid(self):
        return os.getpid()
echo = Echo.remote()
print("ACTOR", ray.get(echo.pid.remote()), flush=True)
open("up", "w").close()
while not os.path.exists("go"):
    time.sleep(0.1)
print("STILL", ray.get(echo.pid.remote()), flush=True)
"""


def ray_pids(marker: str) -> set[int]:
    """Live processes of one attempt's Ray: every one carries its head's marker in its environment."""
    needle = f"VASTFLEET_RAY_HEAD={marker}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and needle in (entry / "environ").read_bytes().split(b"\0") \
                    and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.add(int(entry.name))
        except OSError:
            continue
    return found


def start(api: AgentApi, job: object, workdir: Path, bindir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """The real agent with `ray` of this environment on its PATH; its log in a file, read while it runs."""
    workdir.mkdir(parents=True)
    env = api.agent_env(job, workdir, bindir)  # type: ignore[arg-type]
    env["PATH"] = f"{bindir}{os.pathsep}{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    log = workdir.parent / f"{workdir.name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(AGENT)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    api.procs.append(proc)
    return proc, log


def head_of(log: Path) -> tuple[str, str]:
    """(temp dir, address) of the attempt's Ray head, from the agent's log."""
    text = log.read_text()
    tmp = re.search(r"--temp-dir=(\S+)", text)
    addr = re.search(r"Ray's head is up at (\S+)", text)
    assert tmp and addr, text
    return tmp.group(1), addr.group(1)


def test_two_ray_jobs_share_a_host_without_a_port_clash_and_end_apart(
        api: AgentApi, gpu_bin: Path, tmp_path: Path) -> None:
    script = tmp_path / "hold.py"
    script.write_text(HOLD)
    spec = count_spec(run=f"{sys.executable} {script}", runtime="ray", env=SMALL, checkpoint={"required": False})
    a, b = booted(api.store, spec, instance_id=1001), booted(api.store, spec, instance_id=1002)
    agent_a, log_a = start(api, a, tmp_path / "a", gpu_bin)
    agent_b, log_b = start(api, b, tmp_path / "b", gpu_bin)
    for workdir in (tmp_path / "a", tmp_path / "b"):
        wait_for(lambda w=workdir: (w / "up").exists(), 240, interval=0.2, what=f"the Ray job in {workdir.name}")
    (tmp_a, addr_a), (tmp_b, addr_b) = head_of(log_a), head_of(log_b)
    assert tmp_a != tmp_b and addr_a != addr_b and len(tmp_a) < 40, "a session and ports of its own each"
    assert addr_a.startswith("127.0.0.1:") and addr_b.startswith("127.0.0.1:"), "loopback only"
    clashes = subprocess.run(["grep", "-rl", "Address already in use", tmp_a, tmp_b], capture_output=True,
                             text=True, check=False).stdout
    assert clashes == "", f"a port clash between the two heads: {clashes}"
    pids_a, pids_b = ray_pids(tmp_a), ray_pids(tmp_b)
    assert len(pids_a) >= 4 and len(pids_b) >= 4 and not pids_a & pids_b

    # attempt A ends the hard way (its agent killed): its guards take A's Ray down, and only A's
    os.killpg(agent_a.pid, signal.SIGKILL)
    agent_a.wait()
    wait_for(lambda: not ray_pids(tmp_a) and not Path(tmp_a).exists(), 60, interval=0.2,
             what="every process of A's Ray to end, and its session to be removed")
    assert ray_pids(tmp_b) == pids_b and Path(tmp_b).exists(), "B's Ray untouched"

    # B goes on using its cluster, then ends the ordinary way: every process of its Ray goes with it
    (tmp_path / "b" / "go").touch()
    assert agent_b.wait(timeout=120) == 0
    done = job_in(api.store, b.id, JobState.SUCCEEDED)
    text = log_b.read_text()
    assert done.exit_code == 0 and re.search(r"STILL \d+", text), text
    assert not ray_pids(tmp_b) and not Path(tmp_b).exists()


def test_a_broken_ray_install_fails_the_attempt_with_rays_words_and_retries_by_the_usual_rules(
        api: AgentApi, gpu_bin: Path, tmp_path: Path) -> None:
    # What pip leaves when the `ray` command's interpreter cannot import the package any more.
    broken = tmp_path / "broken-bin"
    broken.mkdir()
    write_exe(broken / "ray", f"#!{sys.executable} -IS\nimport sys\nfrom ray.scripts.scripts import main\n"
                              "sys.exit(main())\n")
    write_exe(broken / "nvidia-smi", (gpu_bin / "nvidia-smi").read_text())
    job = booted(api.store, count_spec(runtime="ray", retries_on_error=1))
    for epoch in (1, 2):
        log = output(api.start_agent(job, tmp_path / f"w{epoch}", broken), timeout=120)
        done = api.store.get(job.id)
        assert "`ray start --head` exited with 1" in log and "No module named 'ray'" in log, log
        assert done.reason.startswith("agent: runtime ray: `ray start --head` exited with 1")
        assert "No module named 'ray'" in done.reason
        assert not (tmp_path / f"w{epoch}" / "steps.log").exists(), "the job's command never ran"
        if epoch == 1:
            assert (done.state, done.errors) == (JobState.PENDING, 1), done.reason
            placed = api.store.transition(job.id, JobState.PLACING, "test placed again")
            job = api.store.transition(job.id, JobState.BOOTING, "test created", expected_epoch=placed.epoch,
                                       instance_id=2002)
        else:
            assert (done.state, done.errors) == (JobState.FAILED, 2), done.reason
