"""End to end with real Ray: `runtime: ray` jobs of examples/ray_train.yaml and examples/ray_tune.yaml on the
simulator (whose fake nvidia-smi gives Ray a logical GPU on this CPU machine), preempted with no notice and
resumed on a new instance from the Ray run the agent committed.

Real processes: the simulator's server and instance process groups, the agent, Ray's head and workers, the
API, redis-server. Each run is tiny (CPU only, 2 workers, a small object store). Never `ray stop`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import ROOT, settings
from tests.helpers import wait_for
from tests.sim_fixtures import SimHandle, running_sim
from vastfleet.runtime import build_runtime
from vastfleet.spec.job import CheckpointRef, Job, JobState
from vastfleet.spec.jobspec import JobSpec, load_job_spec
from vastfleet.storage.local import LocalCheckpointStore
from vastfleet.storage.manifest import object_key

VENV_BIN = Path(sys.executable).parent
pytestmark = [
    pytest.mark.slow,
    # CI installs the `ray` extra, so there these run; elsewhere they need it too.
    pytest.mark.skipif(not (VENV_BIN / "ray").exists() and not os.environ.get("CI"),
                       reason="the `ray` extra is not installed (pip install -e '.[ray]')"),
]
S = JobState
SMALL = ["env.RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION='0.005'"]  # ~100 MB of object store on a 24 GB box
# A silent agent is waited for longer than the harness's 3 s: Ray's start keeps 2 loaded cores busy, and a
# late heartbeat would add an interruption of its own. A preemption is still seen at once (the market says
# paused and two heartbeats are missed).
PATIENT = {"heartbeat_lost_s": 15.0}
COMMITTED = re.compile(r"committed checkpoint step (\d+) \((\d+) files, (\d+) bytes, (\d+) uploaded\)")


@pytest.fixture(autouse=True)
def ray_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The simulated image: `ray` and `python3` of this environment first on the instances' PATH."""
    monkeypatch.setenv("PATH", f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}")


class Logs:
    """What every instance logged (its container log and Ray head's output), kept as last read: a destroy
    removes an instance's files."""

    def __init__(self, sim: SimHandle) -> None:
        self.sim = sim
        self.seen: dict[str, str] = {}

    def read(self) -> dict[str, str]:
        for path in [*self.sim.sim.runner.root.glob("*/container.log"),
                     *self.sim.sim.runner.root.glob("*/workspace/.vastfleet/ray-head.log")]:
            try:
                self.seen[str(path)] = path.read_text(errors="replace")
            except OSError:
                pass
        return self.seen

    def of(self, instance_id: int) -> str:
        return self.read().get(str(self.sim.sim.runner.log_path(instance_id)), "")

    def everything(self) -> str:
        return "\n".join(self.read().values())

    def clean(self) -> None:
        """Remove the Ray sessions that died with their instances (a real container takes its /tmp along)."""
        for tmp in set(re.findall(r"--temp-dir=(/tmp/vfray-[0-9a-f]+)", self.everything())):
            shutil.rmtree(tmp, ignore_errors=True)


def stored(tmp: Path, ref: CheckpointRef, rel: str) -> bytes:
    store = LocalCheckpointStore(tmp / "ckpt", "x" * 32)
    return store.path_for(object_key(ref.prefix, rel, ref.files[rel])).read_bytes()


def ray_spec(name: str, run: str, tmp: Path, **over: Any) -> JobSpec:
    """The example spec with a shorter run that first notes the attempt's Ray token where the test finds it
    (outside every log), so the test can check that no log holds it."""
    sets = [f"run=printf '%s\\n' \"$RAY_AUTH_TOKEN\" >> {tmp / 'tokens'} && {run}", *SMALL]
    sets += [f"{k}={v}" for k, v in over.items()]
    return load_job_spec(ROOT / "examples" / f"{name}.yaml", sets)


def attempt(rt: Any, job_id: str, epoch: int, min_step: int = 1) -> Job | None:
    """The job, once attempt `epoch` runs and has committed a checkpoint of at least `min_step` itself."""
    job = rt.store.get(job_id)
    ref = job.latest_checkpoint
    ok = job.state == S.RUNNING and job.epoch == epoch and ref is not None and ref.epoch == epoch \
        and (ref.step or 0) >= min_step
    return job if ok else None


def ray_train_at(tmp: Path, job: Job | None) -> int:
    """The step of the last Ray Train checkpoint in the job's committed run (0: none yet)."""
    ref = job.latest_checkpoint if job is not None else None
    rel = f"ray/{job.id}/checkpoint_manager_snapshot.json" if job is not None else ""
    if ref is None or rel not in ref.files:
        return 0
    latest = json.loads(stored(tmp, ref, rel)).get("latest_checkpoint_result") or {}
    return int(latest["checkpoint_dir_name"].rsplit("_", 1)[1]) if latest else 0


def no_secret_in_logs(logs: Logs, tmp: Path, attempts: int) -> None:
    tokens = (tmp / "tokens").read_text().split()  # one per attempt: a late heartbeat may add one
    assert len(tokens) == len(set(tokens)) == attempts and all(re.fullmatch(r"[0-9a-f]{64}", t) for t in tokens)
    text = logs.everything()
    assert text and not any(t in text for t in tokens), "a Ray token is in an instance log"


def report_commits(logs: Logs) -> list[tuple[int, int, int, int]]:
    """(step, files, bytes, uploaded) of every commit the agents logged, printed for the record."""
    rows = sorted({tuple(int(g) for g in m.groups()) for m in COMMITTED.finditer(logs.everything())})
    for step, files, size, sent in rows:
        print(f"checkpoint step {step}: {files} files, {size} bytes in the tree, {sent} uploaded")
    return rows  # type: ignore[return-value]


def test_a_ray_train_run_preempted_after_its_second_checkpoint_resumes_with_every_step_counted_once(
        tmp_path: Path, redis_url: str) -> None:
    steps, every = 24, 4
    weights = 1.5  # MB per checkpoint: over the API's 1 MiB cap on request bodies, which blobs stream past
    run = f"python3 ray_train.py --steps {steps} --every {every} --sleep 0.4 --weights-mb {weights}"
    spec = ray_spec("ray_train", run, tmp_path)
    with running_sim(tmp_path, seed=21, hosts=8, boot_delay=0.3) as sim:
        rt = build_runtime(settings(sim, redis_url, tmp_path, **PATIENT)).start()
        logs = Logs(sim)
        try:
            job = rt.store.submit(spec)
            first = wait_for(lambda: ray_train_at(tmp_path, j := attempt(rt, job.id, 1)) >= 2 * every and j, 240,
                             interval=0.2, what="the first attempt's second Ray checkpoint to be committed")
            logs.read()
            assert first.offer_cpus, "the placement recorded the offer's effective cores"
            assert re.search(rf"--num-cpus={int(first.offer_cpus)}\b", logs.of(first.instance_id)), "Ray got them"
            assert "--num-gpus=1" in logs.of(first.instance_id)
            preempted_at = time.monotonic()
            sim.admin.preempt(first.instance_id)
            second = wait_for(lambda: (j := rt.store.get(job.id)).epoch >= 2 and j.state == S.RUNNING and j, 90,
                              interval=0.1, what="a new attempt on a new instance")
            assert second.instance_id != first.instance_id
            # the epoch-1 attempt is fenced now: its last commit is what the new instance restores
            assert second.latest_checkpoint is not None and second.latest_checkpoint.epoch == 1
            last = ray_train_at(tmp_path, second)
            assert last >= 2 * every
            resumed = wait_for(lambda: "RESUME at step" in logs.of(second.instance_id) and logs.of(second.instance_id),
                               240, interval=0.1, what="the new attempt to resume training")
            print(f"preemption -> resumed training: {time.monotonic() - preempted_at:.1f} s")
            assert f"RESUME at step {last + 1}" in resumed, resumed[-3000:]

            done = wait_for(lambda: (j := rt.store.get(job.id)).state.terminal and j, 240, what="the job to finish")
            logs.read()
            assert done.state == S.SUCCEEDED and done.exit_code == 0, done.reason
            assert done.latest_checkpoint is not None
            state = json.loads(stored(tmp_path, done.latest_checkpoint,
                                      f"ray/{job.id}/checkpoint_{steps:06d}/state.json"))
            assert state["counted"] == list(range(1, steps + 1)), "every step counted once along the lineage"
            starts = [(a["attempt"], a["from"]) for a in state["attempts"]]
            assert starts[:2] == [("1", 0), (str(second.epoch), last)], starts  # (a later start: a later resume)
            assert [f for _, f in starts] == sorted(f for _, f in starts), starts
            assert done.progress.get("step", 0) > last and 0 < done.progress["fraction"] <= 1, done.progress
            no_secret_in_logs(logs, tmp_path, attempts=done.epoch)
            commits = report_commits(logs)
            # Ray keeps 2 checkpoints: once both are in the tree, each commit sends only the new one
            full = [(size, sent) for _, files, size, sent in commits if size > 2 * weights * 2**20]
            assert full and all(sent < 0.6 * size for size, sent in full), commits
        finally:
            rt.stop()
            logs.clean()


def _trials(tmp: Path, ref: CheckpointRef, job_id: str) -> dict[str, dict[str, Any]]:
    """Each trial of the committed Tune run: its status in the experiment state and its last checkpoint."""
    top = f"ray/{job_id}/"
    state_file = max(r for r in ref.files if r.startswith(top + "experiment_state-"))
    out: dict[str, dict[str, Any]] = {}
    for trial_json, _meta in json.loads(stored(tmp, ref, state_file))["trial_data"]:
        trial = json.loads(trial_json)
        ckpts = sorted(r for r in ref.files if r.startswith(f"{top}{trial['relative_logdir']}/checkpoint_")
                       and r.endswith("/state.json"))
        out[trial["trial_id"]] = {"status": trial["status"],
                                  "state": json.loads(stored(tmp, ref, ckpts[-1])) if ckpts else None}
    return out


def _mid_search(rt: Any, tmp: Path, job_id: str) -> Job | None:
    """The job, once attempt 1 committed a search state with a trial finished and another one running from a
    checkpoint of its own: the moment to preempt."""
    job = attempt(rt, job_id, 1)
    if job is None or job.latest_checkpoint is None:
        return None
    trials = _trials(tmp, job.latest_checkpoint, job_id).values()
    finished = any(t["status"] == "TERMINATED" for t in trials)
    midway = any(t["status"] == "RUNNING" and t["state"] and t["state"]["iter"] >= 1 for t in trials)
    return job if finished and midway else None


def test_a_ray_tune_asha_search_preempted_midway_keeps_finished_trials_and_resumes_the_others(
        tmp_path: Path, redis_url: str) -> None:
    iters = 12
    spec = ray_spec("ray_tune", f"python3 ray_tune.py --iters {iters} --sleep 0.8", tmp_path)
    with running_sim(tmp_path, seed=23, hosts=8, boot_delay=0.3) as sim:
        rt = build_runtime(settings(sim, redis_url, tmp_path, **PATIENT)).start()
        logs = Logs(sim)
        try:
            job = rt.store.submit(spec)
            first = wait_for(lambda: _mid_search(rt, tmp_path, job.id), 240, interval=0.2,
                             what="a search state with a finished trial and one running from a checkpoint")
            logs.read()
            sim.admin.preempt(first.instance_id)
            second = wait_for(lambda: (j := rt.store.get(job.id)).epoch >= 2 and j.state == S.RUNNING and j, 90,
                              interval=0.1, what="a new attempt on a new instance")
            assert second.latest_checkpoint is not None and second.latest_checkpoint.epoch == 1
            before = _trials(tmp_path, second.latest_checkpoint, job.id)  # attempt 1's last commit: it is fenced
            wait_for(lambda: "RESTORE the search" in logs.of(second.instance_id), 240, what="Tune to restore")

            done = wait_for(lambda: (j := rt.store.get(job.id)).state.terminal and j, 300, what="the search to end")
            logs.read()
            assert done.state == S.SUCCEEDED and done.exit_code == 0, done.reason
            assert done.latest_checkpoint is not None
            after = _trials(tmp_path, done.latest_checkpoint, job.id)
            assert set(before) <= set(after) and len(after) == 4  # Tune adds trials as slots free up
            assert all(t["status"] == "TERMINATED" for t in after.values())
            for trial_id, trial in after.items():
                now, was = trial["state"], before.get(trial_id, {"status": "NEW", "state": None})
                assert now is not None and now["counted"] == list(range(1, now["iter"] + 1)), (trial_id, now)
                if was["status"] == "TERMINATED":  # kept as it was: not run again
                    assert now == was["state"], trial_id
                elif was["state"]:  # resumed from its own checkpoint, in the new attempt
                    later = [a for a in now["attempts"] if a["attempt"] != "1"]
                    assert later[0] == {"attempt": str(second.epoch), "from": was["state"]["iter"]}, now
            assert any(w["status"] == "RUNNING" and w["state"] for w in before.values())
            no_secret_in_logs(logs, tmp_path, attempts=done.epoch)
            report_commits(logs)
        finally:
            rt.stop()
            logs.clean()
