"""Job secrets: names in the spec, values only in the agent's claim answer and the job's environment.

The value must never appear in the job record, its events, the onstart command, the instance's stored env
at the marketplace, or the instance log; a job naming a secret the control plane does not hold is refused
at submit with nothing written. The onstart token that the marketplace lists with the instance opens
nothing once the real agent has claimed: no second claim (which would hand out the secret), no finish.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import count_spec, ours_left, settings
from tests.helpers import wait_for
from tests.sim_fixtures import running_sim
from vastfleet.runtime import build_runtime
from vastfleet.spec.job import JobState

pytestmark = pytest.mark.slow
VALUE = "s3cr3t-hf-value-4711"
# The job proves it got the value without printing it: exit 0 only when it matches, after a pause that
# lets the test read the instance while it runs.
CHECK = ("python3 -c \"import os,sys,time; time.sleep(2); "
         f"sys.exit(0 if os.environ.get('HF_TOKEN') == '{VALUE[::-1]}'[::-1] else 3)\"")


def test_secret_reaches_the_job_and_nothing_else(tmp_path: Path, redis_url: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VASTFLEET_SECRET_HF_TOKEN", raising=False)
    spec = count_spec(steps=1, every=1, sleep=0.01, run=CHECK, secrets="[HF_TOKEN]", **{"checkpoint.required": "false"})
    with running_sim(tmp_path, seed=4, hosts=8, boot_delay=0.2) as sim:
        rt = build_runtime(settings(sim, redis_url, tmp_path, api_token="user-token")).start()
        try:
            api = httpx.Client(base_url=rt.public_url, headers={"Authorization": "Bearer user-token"})
            body = json.loads(spec.model_dump_json())
            refused = api.post("/v1/jobs", json=body)
            assert refused.status_code == 422 and "HF_TOKEN" in refused.text
            assert api.get("/v1/jobs").json() == []  # nothing written

            monkeypatch.setenv("VASTFLEET_SECRET_HF_TOKEN", VALUE)
            created = api.post("/v1/jobs", json=body)
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]

            running = wait_for(lambda: (j := rt.store.get(job_id)).state == JobState.RUNNING and j, 40,
                               what="the job to run")
            row = httpx.get(f"{sim.url}/api/v0/instances/{running.instance_id}/",
                            headers={"Authorization": f"Bearer {sim.api_key}"}).json()["instances"]
            # What anyone who sees the listing holds: the onstart token. The agent has claimed already.
            listed = dict(row["extra_env"])["VASTFLEET_AGENT_TOKEN"]
            agent_api = f"{rt.public_url}/v1/agent/jobs/{job_id}"
            leak = {"Authorization": f"Bearer {listed}"}
            second = httpx.post(f"{agent_api}/claim", headers=leak, json={"nonce": "thief-nonce-0123456789abc"})
            assert second.status_code == 403 and VALUE not in second.text, second.text
            assert httpx.post(f"{agent_api}/finish", headers=leak, json={"exit_code": 0}).status_code == 401
            assert httpx.post(f"{agent_api}/heartbeat", headers=leak, json={}).status_code == 401
            assert rt.store.get(job_id).state == JobState.RUNNING, "the leaked token did not finish the job"
            log_path = sim.sim.runner.log_path(running.instance_id)
            seen_log: list[str] = [""]

            def ended() -> object:
                j = rt.store.get(job_id)  # the state first: the agent logs its exit before it reports it
                try:  # keep the last read: destroy removes the instance's files
                    seen_log[0] = log_path.read_text(errors="replace")
                except OSError:
                    pass
                return j.state.terminal and j

            done = wait_for(ended, 40, what="the job to end")
            assert done.state == JobState.SUCCEEDED and done.exit_code == 0, done.reason

            assert VALUE not in json.dumps(row), "the marketplace's stored instance (env, onstart) holds no secret"
            assert VALUE not in done.model_dump_json()
            assert all(VALUE not in e.model_dump_json() for e in rt.store.events(job_id))
            notes = [e for e in rt.store.events(job_id) if e.kind == "security"]
            assert [e.reason for e in notes] == ["second claim with the onstart token refused"]
            assert all(listed not in e.model_dump_json() for e in rt.store.events(job_id))
            assert "exited with 0" in seen_log[0] and VALUE not in seen_log[0], "the instance log holds no secret"
            assert "vfs1." not in seen_log[0] and listed not in seen_log[0], "nor the session, nor the token"
            wait_for(lambda: not ours_left(sim), 20, what="the instance to be destroyed")
        finally:
            rt.stop()
