"""Fixtures of the agent tests: the agent API on a real uvicorn + redis-server, checkpoint stores, a fake
nvidia-smi, and a runner for the real agent.py as a subprocess."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.helpers import clean_env, free_port, wait_for, wait_port
from vastfleet.agent.tokens import TokenSigner
from vastfleet.api.agent_routes import AgentHooks, AgentSettings, agent_router
from vastfleet.queue import JobStore
from vastfleet.spec import Job, JobSpec, JobState
from vastfleet.storage.base import CheckpointStore
from vastfleet.storage.local import LocalCheckpointStore

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / "src" / "vastfleet" / "agent" / "agent.py"
COUNT = REPO / "examples" / "count_steps.py"
SETTINGS = AgentSettings(heartbeat_interval_s=0.2, poll_interval_s=0.1)


def count_spec(steps: int = 30, every: int = 5, sleep: float = 0.02, **over: Any) -> JobSpec:
    data: dict[str, Any] = {
        "name": "count",
        "image": "python:3.11-slim",
        "resources": {"gpu": ["RTX_4090"]},
        "run": f"{sys.executable} {COUNT} --steps {steps} --every {every} --sleep {sleep}",
        "checkpoint": {"interval": 30},
    }
    data.update(over)
    return JobSpec.model_validate(data)


def booted(store: JobStore, spec: JobSpec, instance_id: int = 1001) -> Job:
    """A submitted job moved to BOOTING on `instance_id`, as the scheduler leaves it after create."""
    job = store.submit(spec)
    job = store.transition(job.id, JobState.PLACING, "test placed")
    return store.transition(
        job.id, JobState.BOOTING, "test created", expected_epoch=job.epoch, instance_id=instance_id
    )


def replace_instance(store: JobStore, job_id: str, instance_id: int) -> Job:
    """Preempted: the job goes INTERRUPTED -> PENDING -> PLACING (epoch + 1) -> BOOTING on a new instance."""
    job = store.get(job_id)
    if job.state in (JobState.RUNNING, JobState.BOOTING):
        store.transition(job_id, JobState.INTERRUPTED, "test preempted", expected_epoch=job.epoch)
    store.transition(job_id, JobState.PENDING, "test requeued")
    job = store.transition(job_id, JobState.PLACING, "test placed again")
    return store.transition(
        job_id, JobState.BOOTING, "test created", expected_epoch=job.epoch, instance_id=instance_id
    )


@dataclass
class AgentApi:
    url: str
    store: JobStore
    ckpt: CheckpointStore
    signer: TokenSigner
    redis: redis.Redis
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def token(self, job: Job, instance: str | int | None = None) -> str:
        return self.signer.issue(
            job.id, job.epoch, instance if instance is not None else job.instance_id or 0
        )

    def agent_env(self, job: Job, workdir: Path, bindir: Path, token: str | None = None) -> dict[str, str]:
        return clean_env(
            VASTFLEET_API=self.url,
            VASTFLEET_AGENT_TOKEN=token or self.token(job),
            VASTFLEET_JOB_ID=job.id,
            VASTFLEET_ATTEMPT=str(job.epoch),
            VASTFLEET_WORKDIR=str(workdir),
            PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}",
            VASTFLEET_AGENT_PATIENCE="30",
        )

    def start_agent(
        self, job: Job, workdir: Path, bindir: Path, token: str | None = None, argv: list[str] | None = None
    ) -> subprocess.Popen[bytes]:
        workdir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            argv or [sys.executable, str(AGENT)],
            env=self.agent_env(job, workdir, bindir, token),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc


def serve(app: FastAPI) -> tuple[str, uvicorn.Server, threading.Thread]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_port(port)
    return f"http://127.0.0.1:{port}", server, thread


def make_api(
    redis_url: str, ckpt: CheckpointStore, hooks: AgentHooks | None = None, settings: AgentSettings = SETTINGS
) -> Iterator[AgentApi]:
    client = redis.Redis.from_url(redis_url)
    store = JobStore(client)
    signer = TokenSigner(b"agent-test-secret-0123456789")
    app = FastAPI()
    app.include_router(agent_router(store, ckpt, signer, hooks, settings))
    url, server, thread = serve(app)
    if isinstance(ckpt, LocalCheckpointStore):
        ckpt.base_url = url
    api = AgentApi(url, store, ckpt, signer, client)
    try:
        yield api
    finally:
        for proc in api.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait()
        server.should_exit = True
        thread.join(10)
        client.close()


@pytest.fixture
def local_store(tmp_path: Path) -> LocalCheckpointStore:
    return LocalCheckpointStore(tmp_path / "blobs", b"blob-test-secret-0123456789")


@pytest.fixture
def api(redis_url: str, local_store: LocalCheckpointStore) -> Iterator[AgentApi]:
    yield from make_api(redis_url, local_store)


@pytest.fixture
def client(redis_url: str, local_store: LocalCheckpointStore) -> Iterator[tuple[TestClient, AgentApi]]:
    """The same router in-process (no socket): for the API-level tests."""
    rc = redis.Redis.from_url(redis_url)
    store = JobStore(rc)
    signer = TokenSigner(b"agent-test-secret-0123456789")
    app = FastAPI()
    app.include_router(agent_router(store, local_store, signer, None, SETTINGS))
    local_store.base_url = "http://testserver"
    with TestClient(app) as tc:
        yield tc, AgentApi("http://testserver", store, local_store, signer, rc)
    rc.close()


# --- the agent API driven by hand, as an agent would (for the API-level tests) -----------------------------

Client = tuple[TestClient, AgentApi]
NONCE = "n0nce-of-the-test-agent-0123456789"


def call(tc: TestClient, token: str, job_id: str, verb: str, body: Any = None) -> Any:
    return tc.post(
        f"/v1/agent/jobs/{job_id}/{verb}", json=body or {}, headers={"Authorization": f"Bearer {token}"}
    )


def manifest(step: int, files: dict[str, bytes]) -> dict[str, Any]:
    return {
        "step": step,
        "files": {rel: {"size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for rel, b in files.items()},
    }


def upload(
    tc: TestClient,
    token: str,
    job_id: str,
    step: int,
    files: dict[str, bytes],
    stored: dict[str, bytes] | None = None,
) -> dict[str, Any]:
    """Presign and PUT every file (`stored` overrides the bytes actually sent); returns the manifest."""
    m = manifest(step, files)
    urls = call(tc, token, job_id, "presign-upload", m)
    assert urls.status_code == 200, urls.text
    for rel, entry in urls.json()["files"].items():
        sent = (stored or {}).get(rel, files[rel])
        r = tc.put(entry["url"], content=sent, headers=entry["headers"])
        assert r.status_code == (200 if sent == files[rel] else 422), r.text
    return m


def claim(tc: TestClient, api: AgentApi, job: Any, nonce: str = NONCE, **body: Any) -> str:
    """Claim with the onstart token as the agent does; returns the session secret the claim answered."""
    r = call(tc, api.token(job), job.id, "claim", {"nonce": nonce, **body})
    assert r.status_code == 200, r.text
    return str(r.json()["session"])


def running(c: Client) -> tuple[TestClient, AgentApi, Any, str]:
    tc, api = c
    job = booted(api.store, count_spec())
    session = claim(tc, api, job, gpus=["RTX 4090, 24564 MiB"])
    return tc, api, api.store.get(job.id), session


def write_exe(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def gpu_bin(tmp_path: Path) -> Path:
    """A PATH dir with a fake nvidia-smi that reports one RTX 4090."""
    bindir = tmp_path / "gpubin"
    bindir.mkdir()
    write_exe(bindir / "nvidia-smi", "#!/bin/sh\necho 'NVIDIA GeForce RTX 4090, 24564 MiB'\n")
    return bindir


@pytest.fixture
def nogpu_bin(tmp_path: Path) -> Path:
    """A PATH dir whose nvidia-smi fails the way it does on a host whose driver is gone."""
    bindir = tmp_path / "nogpubin"
    bindir.mkdir()
    write_exe(
        bindir / "nvidia-smi",
        "#!/bin/sh\necho \"NVIDIA-SMI has failed because it couldn't communicate "
        'with the NVIDIA driver."\nexit 9\n',
    )
    return bindir


def output(proc: subprocess.Popen[bytes], timeout: float = 30) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out.decode(errors="replace")


def job_in(store: JobStore, job_id: str, *states: JobState, timeout: float = 20) -> Job:
    return wait_for(
        lambda: (j := store.get(job_id)) and j.state in states and j,
        timeout,
        what=f"job {job_id} in {[s.value for s in states]}",
    )
