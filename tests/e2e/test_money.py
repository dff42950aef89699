"""End to end, money: what the simulator bills equals what vastfleet attributes, to the cent; a cancelled
job's instance goes at once with every step in its history; the fleet's caps and the account's credit hold
new rentals back before they are made, saying why.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import count_spec, ours_left, settings
from tests.helpers import wait_for
from tests.sim_fixtures import running_sim
from vastfleet.runtime import build_runtime
from vastfleet.scheduler.labels import parse_label
from vastfleet.scheduler.spend import SpendLedger
from vastfleet.spec.job import JobState

pytestmark = pytest.mark.slow
S = JobState


def _billed_per_job(sim) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in sim.admin.ledger()["instances"].values():
        owner = parse_label(row["label"])
        if owner is not None:
            out[owner[0]] = out.get(owner[0], 0.0) + row["total"]
    return out


def test_the_ledger_equals_the_attributed_spend_and_a_cancel_tears_down_at_once(tmp_path: Path,
                                                                               redis_url: str) -> None:
    with running_sim(tmp_path, seed=4, hosts=16, boot_delay=0.3) as sim:
        rt = build_runtime(settings(sim, redis_url, tmp_path, heartbeat_lost_s=30.0)).start()
        try:
            jobs = [rt.store.submit(count_spec(steps=30, every=5, sleep=0.1)).id for _ in range(2)]
            victim = rt.store.submit(count_spec(steps=400, every=5, sleep=0.1)).id
            ran = wait_for(lambda: (j := rt.store.get(victim)).state == S.RUNNING and j.latest_checkpoint and j,
                           40, what="the job to be cancelled to run and checkpoint")
            rt.store.cancel(victim)
            # the silent bound is 30 s: a destroy within it is the prompt teardown, not the agent's silence
            wait_for(lambda: ran.instance_id not in {i["id"] for i in ours_left(sim)}, 15,
                     what="the cancelled job's instance destroyed")
            cancelled_at = rt.store.get(victim).updated_at

            def told() -> list[str]:
                kinds = [e.kind for e in rt.store.events(victim) if e.at >= cancelled_at]
                return kinds if "teardown" in kinds and "destroyed" in kinds else []

            assert wait_for(told, 10, what="the teardown told in the job's history")
            for job_id in jobs:
                wait_for(lambda j=job_id: rt.store.get(j).state.terminal, 60, what="the jobs to finish")
            wait_for(lambda: not ours_left(sim), 20, what="nothing of ours left")
            ledger = SpendLedger(rt.redis, "vf")
            wait_for(lambda: ledger.of_jobs([victim, *jobs]).keys() == {victim, *jobs}, 10, what="the books")
            rt.loop.run_pass()  # one more accrual after the last destroy
            billed = _billed_per_job(sim)
            attributed = ledger.of_jobs(billed)
            for job_id, dollars in billed.items():
                assert attributed.get(job_id, 0.0) == pytest.approx(dollars, abs=0.005), job_id
            assert ledger.total() == pytest.approx(sum(billed.values()), abs=0.005)
            assert rt.store.get(jobs[0]).cost_usd == pytest.approx(billed[jobs[0]], abs=0.005)
        finally:
            rt.stop()


def test_caps_and_credit_hold_rentals_back_before_they_are_made(tmp_path: Path, redis_url: str) -> None:
    with running_sim(tmp_path, seed=4, hosts=16, boot_delay=0.3) as sim:
        rt = build_runtime(settings(sim, redis_url, tmp_path, max_usd_per_hour=0.30,
                                    credit_reserve_usd=0.0)).start()
        try:
            spec = count_spec(steps=2000, every=50, sleep=0.2)
            ids = [rt.store.submit(spec).id for _ in range(4)]
            wait_for(lambda: sum(rt.store.get(j).state == S.RUNNING for j in ids) >= 1, 40, what="a rental")
            for _ in range(10):
                rt.loop.run_pass()
            rates = [row["compute_rate"] + row["storage_rate"] for row in sim.admin.ledger()["instances"].values()
                     if row["phase"] != "destroyed"]
            assert 0 < sum(rates) <= 0.30 + 1e-6, "the fleet's $/h stays under its cap"
            waiting = [rt.store.get(j) for j in ids if rt.store.get(j).state == S.PENDING]
            assert waiting and all("$0.30/h" in j.reason for j in waiting), [j.reason for j in waiting]
            sim.admin.set_knobs(credit=sim.admin.ledger()["total"] + 0.01)  # a cent of credit left
            rt.loop._balance_at = float("-inf")  # read the credit at the next pass, not a minute later
            for job_id in ids:
                if rt.store.get(job_id).state != S.PENDING:
                    rt.store.cancel(job_id)
            for _ in range(5):
                rt.loop.run_pass()
            for job_id in ids:
                job = rt.store.get(job_id)
                if job.state == S.PENDING:
                    assert "credit" in job.reason, job.reason
            assert sum(rt.store.get(j).state in (S.PLACING, S.BOOTING, S.RUNNING) for j in ids) == 0
        finally:
            rt.stop()
