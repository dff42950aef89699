"""The agent never dies silently, and never blames the host for the job: whatever the claim answer holds, a
job that cannot start and any unexpected failure are reported as the job's fault (counted against
retries_on_error). Checkpoint links that lead out of a checkpoint directory are never followed."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.agent.conftest import AGENT, AgentApi, booted, count_spec, make_api, output
from vastfleet.api.agent_routes import AgentHooks, AgentSettings
from vastfleet.spec import JobState
from vastfleet.storage.local import LocalCheckpointStore


@pytest.fixture
def nul_api(redis_url: str, local_store: LocalCheckpointStore) -> Iterator[AgentApi]:
    """An API whose claim answer carries a job secret with a NUL in it (a secret file can hold anything)."""
    yield from make_api(redis_url, local_store, AgentHooks(resolve_secrets=lambda names: {"BAD": "a\x00b"}))


@pytest.mark.parametrize(("retries", "state"), [(1, JobState.PENDING), (0, JobState.FAILED)])
def test_a_nul_in_the_env_is_reported_as_the_jobs_fault(
    nul_api: AgentApi, gpu_bin: Path, tmp_path: Path, retries: int, state: JobState
) -> None:
    job = booted(nul_api.store, count_spec(secrets=["BAD"], retries_on_error=retries))
    proc = nul_api.start_agent(job, tmp_path / "w", gpu_bin)
    log = output(proc)
    done = nul_api.store.get(job.id)
    assert (done.state, done.errors, done.exit_code) == (state, 1, None), log
    assert "cannot start the job's run" in done.reason and "null byte" in done.reason, done.reason
    assert "Traceback" not in log and "a\x00b" not in log
    assert not [e for e in nul_api.store.events(job.id) if e.to_state == JobState.INTERRUPTED], "not the host's"


def test_any_unexpected_failure_of_the_agent_is_reported_as_the_jobs_fault(
    redis_url: str, local_store: LocalCheckpointStore, gpu_bin: Path, tmp_path: Path
) -> None:
    # A claim answer the agent cannot use (a poll interval that is no number): it must report, not vanish.
    gen = make_api(redis_url, local_store, settings=AgentSettings(heartbeat_interval_s=0.2,
                                                                   poll_interval_s="soon"))  # type: ignore[arg-type]
    api = next(gen)
    try:
        job = booted(api.store, count_spec())
        log = output(api.start_agent(job, tmp_path / "w", gpu_bin))
        done = api.store.get(job.id)
        assert done.state == JobState.FAILED and done.errors == 1, log
        assert done.reason.startswith("agent: agent failed: ValueError") and "agent.py line" in done.reason
        assert "agent failed: ValueError" in log
    finally:
        gen.close()


def test_a_host_fault_stays_the_hosts(api: AgentApi, nogpu_bin: Path, tmp_path: Path) -> None:
    job = booted(api.store, count_spec(retries_on_error=0))
    output(api.start_agent(job, tmp_path / "w", nogpu_bin))
    done = api.store.get(job.id)
    assert (done.state, done.errors) == (JobState.INTERRUPTED, 0) and done.reason.startswith("agent: no GPU")


# --- links out of a checkpoint directory ------------------------------------------------------------------


def agent_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vastfleet_agent_under_test", AGENT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dir_files_refuses_links_leading_out_and_skips_links_inside(tmp_path: Path) -> None:
    agent = agent_module()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "id_rsa").write_text("private key")
    ckpt = tmp_path / "ckpt"
    (ckpt / "5" / "sub").mkdir(parents=True)
    (ckpt / "5" / "model.bin").write_bytes(b"weights")
    (ckpt / "5" / "alias.bin").symlink_to("model.bin")  # inside: skipped, not refused
    assert set(agent.dir_files(str(ckpt / "5"))) == {"model.bin"}
    (ckpt / "5" / "sub" / "key").symlink_to(outside / "id_rsa")  # a file link out
    assert agent.dir_files(str(ckpt / "5")) is None
    (ckpt / "6").mkdir()
    (ckpt / "6" / "data").symlink_to(outside, target_is_directory=True)  # a dir link out
    assert agent.dir_files(str(ckpt / "6")) is None
    (ckpt / "7").symlink_to(outside, target_is_directory=True)  # the checkpoint dir itself
    assert agent.dir_files(str(ckpt / "7")) is None


def test_the_agent_never_uploads_what_a_checkpoint_link_points_to(
    api: AgentApi, gpu_bin: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.txt").write_text("host-private-bytes-4711")
    run = (f"mkdir -p \"$VASTFLEET_CKPT_DIR/6\" && ln -s {outside} \"$VASTFLEET_CKPT_DIR/5\""
           f" && ln -s {outside}/secret.txt \"$VASTFLEET_CKPT_DIR/6/state.json\"; sleep 1.5")
    job = booted(api.store, count_spec(run=run))
    log = output(api.start_agent(job, tmp_path / "w", gpu_bin))
    done = api.store.get(job.id)
    assert done.state == JobState.SUCCEEDED and done.latest_checkpoint is None, log
    assert log.count("leading out of it: skipped, nothing uploaded") == 2, log
    stored = [p for p in Path(api.ckpt.root).rglob("*") if p.is_file()]  # type: ignore[attr-defined]
    assert all(b"host-private-bytes-4711" not in p.read_bytes() for p in stored) and not stored
    assert os.path.exists(outside / "secret.txt")
