"""The real agent.py as a subprocess against a real API (uvicorn + redis-server + local store)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.agent.conftest import AGENT, AgentApi, booted, count_spec, output, replace_instance
from tests.helpers import wait_for
from vastfleet.agent.onstart import build_onstart, travelling_source
from vastfleet.spec import JobState
from vastfleet.storage.local import LocalCheckpointStore


def committed_state(api: AgentApi, job_id: str) -> dict:
    ref = api.store.get(job_id).latest_checkpoint
    assert ref is not None
    store = api.ckpt
    assert isinstance(store, LocalCheckpointStore)
    return json.loads(store.path_for(ref.prefix + "state.json").read_text())


def guards_of(workdir: Path) -> list[int]:
    """Live processes of this workdir: its agent and guard (by command line) and the job (by cwd)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
                stat = (entry / "stat").read_text()
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            mine = str(workdir).encode() in cmd or cwd == str(workdir)
            if mine and stat.rsplit(")", 1)[1].split()[0] != "Z":
                pids.append(int(entry.name))
    return pids


def test_onstart_runs_the_agent_under_sh_and_the_job_succeeds(
    api: AgentApi, gpu_bin: Path, tmp_path: Path
) -> None:
    job = booted(api.store, count_spec(steps=30, every=5))
    token = api.token(job)
    workdir = tmp_path / "instance"
    proc = api.start_agent(job, workdir, gpu_bin, token, argv=["/bin/sh", "-c", build_onstart(api.url)])
    log = output(proc)
    assert proc.returncode == 0, log
    done = api.store.get(job.id)
    assert done.state == JobState.SUCCEEDED and done.exit_code == 0, log
    assert done.latest_checkpoint is not None and done.latest_checkpoint.step == 30
    assert committed_state(api, job.id)["counted"] == list(range(1, 31))
    assert [line for line in log.splitlines() if line.startswith("STEP")] == [
        f"STEP {i}" for i in range(1, 31)
    ]
    assert (workdir / ".vastfleet" / "agent.py").read_text() == travelling_source(AGENT.read_text())
    assert token not in log and "sig=" not in log
    assert done.progress.get("step", 0) > 0  # heartbeats carried the job's progress
    kinds = [e.kind for e in api.store.events(job.id)]
    assert kinds.count("checkpoint") >= 2


def test_killed_agent_resumes_from_checkpoint_without_recounting(
    api: AgentApi, gpu_bin: Path, tmp_path: Path
) -> None:
    job = booted(api.store, count_spec(steps=40, every=5, sleep=0.05))
    first = tmp_path / "first"
    proc = api.start_agent(job, first, gpu_bin, argv=["/bin/sh", "-c", build_onstart(api.url)])
    wait_for(lambda: (r := api.store.get(job.id).latest_checkpoint) and r.step >= 10, 20, what="a commit")
    assert len(guards_of(first)) >= 3  # agent, guard, job
    os.killpg(proc.pid, signal.SIGKILL)  # the simulator's preemption: the whole group, no SIGTERM
    proc.wait()
    wait_for(lambda: not guards_of(first), 10, what="the job to die with its agent")
    job = replace_instance(api.store, job.id, 2002)
    # Read after the epoch moved: a commit the killed agent had already sent is either in or fenced off.
    killed_at = api.store.get(job.id).latest_checkpoint
    assert killed_at is not None and killed_at.step is not None
    resume_step = killed_at.step
    proc = api.start_agent(job, tmp_path / "second", gpu_bin)
    log = output(proc)
    done = api.store.get(job.id)
    assert done.state == JobState.SUCCEEDED, log
    assert f"RESUME from step {resume_step}" in log
    steps = [int(line.split()[1]) for line in log.splitlines() if line.startswith("STEP")]
    assert steps == list(range(resume_step + 1, 41))
    state = committed_state(api, job.id)
    assert state["counted"] == list(range(1, 41))  # each step once along the surviving lineage
    assert [a["from"] for a in state["attempts"]] == [0, resume_step]


def test_stale_epoch_agent_is_stopped_and_writes_nothing_more(
    api: AgentApi, gpu_bin: Path, tmp_path: Path
) -> None:
    job = booted(api.store, count_spec(steps=100000, every=10, sleep=0.02))
    workdir = tmp_path / "zombie"
    proc = api.start_agent(job, workdir, gpu_bin)
    wait_for(lambda: api.store.get(job.id).latest_checkpoint, 20, what="a commit")
    assert len(guards_of(workdir)) >= 2  # guard and job (this agent runs from the source tree)
    moved = replace_instance(api.store, job.id, 2002)  # the job moved on while this instance lived
    log = output(proc)
    assert "stop" in log and "command exited" not in log
    after = api.store.get(job.id)
    assert (after.state, after.epoch, after.latest_checkpoint) == (
        moved.state,
        moved.epoch,
        moved.latest_checkpoint,
    )
    assert not [e for e in api.store.events(job.id) if e.at > moved.updated_at and e.kind == "checkpoint"]
    wait_for(lambda: not guards_of(workdir), 10, what="the job to be killed")


def test_zombie_claim_exits_without_running(api: AgentApi, gpu_bin: Path, tmp_path: Path) -> None:
    job = booted(api.store, count_spec())
    old_token = api.token(job)
    replace_instance(api.store, job.id, 2002)
    proc = api.start_agent(job, tmp_path / "zombie", gpu_bin, old_token)
    log = output(proc)
    assert proc.returncode == 0 and "attempt is over" in log
    assert not (tmp_path / "zombie" / "steps.log").exists()
    assert not list(Path(api.ckpt.root).rglob("*"))  # type: ignore[attr-defined]
    assert api.store.get(job.id).state == JobState.BOOTING


def test_no_gpu_reports_a_clear_error_and_runs_nothing(
    api: AgentApi, nogpu_bin: Path, tmp_path: Path
) -> None:
    job = booted(api.store, count_spec())
    proc = api.start_agent(job, tmp_path / "w", nogpu_bin)
    log = output(proc)
    assert "no GPU visible: nvidia-smi exited 9" in log
    done = api.store.get(job.id)
    assert done.state == JobState.INTERRUPTED and done.reason.startswith("agent: no GPU visible"), done.reason
    assert not (tmp_path / "w" / "steps.log").exists()


def test_cuda_visible_devices_minus_one_means_no_gpu(api: AgentApi, gpu_bin: Path, tmp_path: Path) -> None:
    job = booted(api.store, count_spec())
    env = api.agent_env(job, tmp_path / "w", gpu_bin)
    env["CUDA_VISIBLE_DEVICES"] = "-1"
    (tmp_path / "w").mkdir()
    out = subprocess.run(
        [sys.executable, str(AGENT)], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert "no GPU visible: CUDA_VISIBLE_DEVICES" in out.stdout
    assert api.store.get(job.id).state == JobState.INTERRUPTED


def test_ray_runtime_without_ray_fails_clearly(api: AgentApi, gpu_bin: Path, tmp_path: Path) -> None:
    # Only the "ray missing" branch is testable here (no ray in this environment).
    job = booted(api.store, count_spec(runtime="ray"))
    env_path = f"{gpu_bin}:/usr/bin:/bin"
    proc = api.start_agent(job, tmp_path / "w", gpu_bin)
    assert "ray" not in os.popen(f"PATH={env_path} command -v ray").read()
    log = output(proc)
    done = api.store.get(job.id)
    assert "`ray` is not on PATH" in log
    assert (done.state, done.exit_code) == (JobState.FAILED, 127) and "ray" in done.reason
    assert not (tmp_path / "w" / "steps.log").exists()


def test_failed_setup_reports_its_exit_code(api: AgentApi, gpu_bin: Path, tmp_path: Path) -> None:
    job = booted(api.store, count_spec(setup="echo preparing; exit 7"))
    log = output(api.start_agent(job, tmp_path / "w", gpu_bin))
    done = api.store.get(job.id)
    assert (done.state, done.exit_code) == (JobState.FAILED, 7), log
    assert not (tmp_path / "w" / "steps.log").exists()


def test_agent_rides_out_an_api_that_is_not_up_yet(
    redis_url: str, local_store: LocalCheckpointStore, gpu_bin: Path, tmp_path: Path
) -> None:
    from tests.agent.conftest import make_api

    gen = make_api(redis_url, local_store)
    api = next(gen)
    try:
        job = booted(api.store, count_spec(steps=5, every=5))
        token = api.token(job)
        # Point the agent at a port nothing listens on yet, through a tiny TCP relay started later.
        from tests.helpers import free_port

        port = free_port()
        env = api.agent_env(job, tmp_path / "w", gpu_bin, token)
        env["VASTFLEET_API"] = f"http://127.0.0.1:{port}"
        (tmp_path / "w").mkdir()
        proc = subprocess.Popen(
            [sys.executable, str(AGENT)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        api.procs.append(proc)
        relay_log: list[str] = []
        import threading

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                relay_log.append(line.decode())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        wait_for(lambda: any("retrying" in line for line in relay_log), 20, what="a retry")
        relay = _Relay(port, int(api.url.rsplit(":", 1)[1]))
        try:
            proc.wait(30)
            reader.join(5)
        finally:
            relay.close()
        assert api.store.get(job.id).state == JobState.SUCCEEDED, "".join(relay_log)
    finally:
        gen.close()


class _Relay:
    """Forwards one loopback port to another (stands in for an API that comes up late)."""

    def __init__(self, listen: int, target: int) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", listen))
        self.sock.listen(16)
        self.target = target
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: object, dst: object) -> None:
        try:
            while data := src.recv(65536):  # type: ignore[attr-defined]
                dst.sendall(data)  # type: ignore[attr-defined]
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(1)  # type: ignore[attr-defined]
            except OSError:
                pass

    def close(self) -> None:
        self.closed = True
        self.sock.close()


def test_container_restart_reclaims_and_uploads_what_was_left_behind(
    api: AgentApi, gpu_bin: Path, tmp_path: Path
) -> None:
    job = booted(api.store, count_spec(steps=40, every=5, sleep=0.05))
    token = api.token(job)
    workdir = tmp_path / "disk"
    onstart = ["/bin/sh", "-c", build_onstart(api.url)]
    proc = api.start_agent(job, workdir, gpu_bin, token, argv=onstart)
    wait_for(lambda: api.store.get(job.id).latest_checkpoint, 20, what="a commit")
    os.killpg(proc.pid, signal.SIGKILL)  # the container restarts on the same disk: same attempt
    proc.wait()
    wait_for(lambda: not guards_of(workdir), 10, what="the job to die with its agent")
    # A checkpoint the job completed just before the kill, which the agent had not uploaded yet.
    ckpt_dir = workdir / ".vastfleet" / "ckpt"
    newest = max(int(p.name.rsplit("-", 1)[1]) for p in ckpt_dir.iterdir() if p.name.startswith("step-"))
    left = newest + 3
    (ckpt_dir / f"step-{left:08d}").mkdir()
    (ckpt_dir / f"step-{left:08d}" / "state.json").write_text(
        json.dumps(
            {"step": left, "counted": list(range(1, left + 1)), "attempts": [{"attempt": "1", "from": 0}]}
        )
    )
    assert api.store.get(job.id).latest_checkpoint.step < left  # type: ignore[union-attr]
    log = output(api.start_agent(job, workdir, gpu_bin, token, argv=onstart))
    done = api.store.get(job.id)
    assert done.state == JobState.SUCCEEDED and done.epoch == job.epoch, log
    assert f"committed checkpoint step {left}" in log and f"RESUME from step {left}" in log
    assert committed_state(api, job.id)["counted"] == list(range(1, 41))
    assert "agent_reclaimed" in [e.kind for e in api.store.events(job.id)]


def test_the_example_job_spec_runs_under_the_agent(api: AgentApi, gpu_bin: Path, tmp_path: Path) -> None:
    from vastfleet.spec import load_job_spec

    root = Path(__file__).resolve().parents[2]
    spec = load_job_spec(
        root / "examples" / "count.yaml",
        [f"run={sys.executable} count_steps.py --steps 6 --every 3 --sleep 0"],
    )
    job = booted(api.store, spec)
    workdir = tmp_path / "w"
    log = output(api.start_agent(job, workdir, gpu_bin))
    assert api.store.get(job.id).state == JobState.SUCCEEDED, log
    assert (workdir / "steps.log").read_text().split() == [str(i) for i in range(1, 7)]
    assert committed_state(api, job.id)["counted"] == list(range(1, 7))
