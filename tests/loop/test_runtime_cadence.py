"""The agent's claim answer carries the Young/Daly cadence of the live scheduler for `interval: auto`."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import wait_for
from tests.loop.factories import make_offer, make_spec
from tests.market_doubles import RecordingMarketplace
from vastfleet.runtime import Settings, build_runtime
from vastfleet.scheduler.exclusions import CheckpointCosts
from vastfleet.spec.job import JobState


def test_the_claim_answers_the_policy_cadence_from_the_measured_upload_cost(redis_url: str, tmp_path) -> None:
    market = RecordingMarketplace([make_offer(1)])
    settings = Settings(redis_url=redis_url, api_port=0, pass_interval_s=0.05, workers=0, inline_actions=True,
                        data_dir=tmp_path, api_token="t" * 20, log_level="WARNING", checkpoint_interval_s=600.0)
    runtime = build_runtime(settings, market=market).start()
    try:
        job = runtime.store.submit(make_spec(interruptible="never"))
        booted = wait_for(lambda: (j := runtime.store.get(job.id)).state == JobState.BOOTING and j, 10,
                          what="the job to be placed")
        env = market.requests[booted.instance_id].env

        def claim() -> float:
            answer = httpx.post(f"{runtime.public_url}/v1/agent/jobs/{job.id}/claim",
                                headers={"Authorization": f"Bearer {env['VASTFLEET_AGENT_TOKEN']}"},
                                json={"instance_id": booted.instance_id, "nonce": "cadence-test-nonce-0123"}, timeout=10)
            assert answer.status_code == 200, answer.text
            return float(answer.json()["checkpoint_interval"])

        assert runtime.loop is not None
        first = claim()
        assert first != 600.0, "not the constant any more"
        # the hazard moves a little with every pass's exposure: the same estimate, not the same float
        assert first == pytest.approx(runtime.loop.placer.checkpoint_interval(runtime.store.get(job.id), 60.0),
                                      rel=0.05)
        CheckpointCosts(runtime.redis, settings.prefix).record(job.id, 900.0)  # a slow upload was measured
        assert claim() > first, "a dearer checkpoint is taken less often"
    finally:
        runtime.stop()


def test_an_api_without_a_scheduler_answers_the_cadence_another_process_published(redis_url: str, tmp_path) -> None:
    # the split deployment: one process serves the agent API, another runs the scheduler; they share Redis
    market = RecordingMarketplace([make_offer(1)])
    shared = {"redis_url": redis_url, "agent_secret": "a" * 48, "storage_secret": "s" * 48, "log_level": "WARNING",
              "api_token": "t" * 20, "checkpoint_interval_s": 600.0}
    api = build_runtime(Settings(**shared, api_port=0, run_scheduler=False, workers=0,
                                 data_dir=tmp_path / "api")).start()
    sched = build_runtime(Settings(**shared, run_api=False, pass_interval_s=0.05, workers=0, inline_actions=True,
                                   public_url=api.public_url, data_dir=tmp_path / "sched"), market=market).start()
    try:
        assert api.loop is None and sched.loop is not None
        job = sched.store.submit(make_spec(interruptible="never"))
        booted = wait_for(lambda: (j := sched.store.get(job.id)).state == JobState.BOOTING and j, 10,
                          what="the job to be placed")
        wait_for(lambda: sched.job_hazards.hazard(job.id) is not None, 10, what="the hazard to be published")
        env = market.requests[booted.instance_id].env
        answer = httpx.post(f"{api.public_url}/v1/agent/jobs/{job.id}/claim",
                            headers={"Authorization": f"Bearer {env['VASTFLEET_AGENT_TOKEN']}"},
                            json={"instance_id": booted.instance_id, "nonce": "cadence-test-nonce-0123"}, timeout=10)
        assert answer.status_code == 200, answer.text
        interval = float(answer.json()["checkpoint_interval"])
        assert interval != 600.0, "the scheduler's cadence, not the API's default"
        assert interval == pytest.approx(sched.loop.placer.checkpoint_interval(sched.store.get(job.id), 60.0),
                                         rel=0.05)
    finally:
        sched.stop()
        api.stop()
