"""The process runner and the `vastfleet sim serve` process: real process groups that really die."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import vastai

from tests.helpers import clean_env, free_port, wait_for, wait_port
from vastfleet.sim.catalog import build_market
from vastfleet.sim.entities import Instance, Phase
from vastfleet.sim.runner import ProcessRunner, instance_env


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _instance(onstart: str, env: dict[str, str] | None = None) -> tuple[Instance, object]:
    _, machines = build_market(0, 3)
    machine = machines[0]
    inst = Instance(
        id=77,
        machine_id=machine.id,
        host_id=machine.host_id,
        gpu_ids=(0,),
        image="x",
        disk_gb=10,
        env=env or {},
        onstart=onstart,
        label=None,
        runtype="ssh",
        is_bid=False,
        price=1.0,
        min_bid=0.5,
        created_at=0.0,
        seq=1,
        phase=Phase.running,
        ports={"22/tcp": 40022, "8081/tcp": 41081},
    )
    return inst, machine


def test_env_keeps_real_variables_maps_ports_and_puts_fake_gpu_tools_first(tmp_path: Path) -> None:
    inst, machine = _instance("true", {"JOB": "1", "-p 8081:8081": "1", "-h host": "1"})
    env = instance_env(inst, machine, tmp_path / "ws", tmp_path / "bin")  # type: ignore[arg-type]
    assert env["JOB"] == "1" and "-p 8081:8081" not in env and "-h host" not in env
    assert env["VAST_TCP_PORT_8081"] == "41081" and env["VAST_TCP_PORT_22"] == "40022"
    assert env["VAST_CONTAINERLABEL"] == "C.77" and env["CONTAINER_ID"] == "77"
    assert env["PATH"].startswith(str(tmp_path / "bin")) and env["HOME"] == str(tmp_path / "ws")


def test_kill_takes_the_whole_group_with_sigkill_and_remove_deletes_the_disk(tmp_path: Path) -> None:
    runner = ProcessRunner(tmp_path)
    inst, machine = _instance("trap 'echo got-term' TERM; sleep 600 & echo $! > child.pid; wait")
    runner.start(inst, machine)  # type: ignore[arg-type]
    pidfile = runner.sandbox(77) / "child.pid"
    wait_for(pidfile.exists, what="the child pid")
    child = int(pidfile.read_text())
    leader = runner.info(77)["pid"]
    assert _alive(child) and runner.alive(77)
    runner.kill(77)
    wait_for(lambda: not _alive(child), what="the child to die")
    assert runner.info(77)["last_exit"] == -signal.SIGKILL and not _alive(leader)
    assert "got-term" not in runner.log_text(77)  # no SIGTERM, no notice
    runner.remove(77)
    assert not runner.instance_dir(77).exists()


def test_fake_nvidia_smi_answers_the_usual_queries(tmp_path: Path) -> None:
    runner = ProcessRunner(tmp_path)
    inst, machine = _instance(
        "nvidia-smi --query-gpu=name,memory.total,uuid --format=csv,noheader; nvidia-smi -L;"
        " nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits"
    )
    runner.start(inst, machine)  # type: ignore[arg-type]
    wait_for(lambda: runner.log_text(77).count("\n") >= 3, what="nvidia-smi output")
    lines = runner.log_text(77).splitlines()
    name = machine.gpu_name  # type: ignore[attr-defined]
    assert lines[0].startswith("NVIDIA") and name in lines[0] and lines[0].count(", ") == 2
    assert lines[1].startswith("GPU 0: NVIDIA") and "(UUID: GPU-" in lines[1]
    assert lines[2].isdigit()
    runner.close()


def test_serve_command_answers_the_sdk_and_leaves_no_process_behind(tmp_path: Path) -> None:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "vastfleet.sim",
        "serve",
        "--port",
        str(port),
        "--seed",
        "2",
        "--hosts",
        "12",
        "--api-key",
        "k-serve",
        "--workdir",
        str(tmp_path / "w"),
        "--quiet-market",
        "--boot-delay",
        "0",
    ]
    proc = subprocess.Popen(cmd, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_port(port, timeout=20)
        vast = vastai.VastAI(api_key="k-serve", server_url=f"http://127.0.0.1:{port}")
        offer = vast.search_offers(query="num_gpus>=1", order="dph_total", limit=1)[0]
        iid = vast.create_instance(offer["id"], image="x", onstart_cmd="sleep 600 & echo $! > c.pid; wait")[
            "new_contract"
        ]
        pidfile = tmp_path / "w" / "instances" / str(iid) / "workspace" / "c.pid"
        wait_for(pidfile.exists, what="the instance's child")
        child = int(pidfile.read_text())
        assert _alive(child)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    wait_for(lambda: not _alive(child), what="the instance to die with the simulator")
