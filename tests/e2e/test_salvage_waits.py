"""Salvage against the real simulator, marketplace adapter, redis-server and local store: a copy the
marketplace cannot run while the instance's host is offline (or while its API fails) spends no try; the
salvage waits for the host and then copies, verifies and commits. Found by the chaos run (bench/chaos.py):
three refusals within two seconds used to give the salvage up, and the disk was destroyed with the work.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import redis

from tests.loop.factories import make_spec
from tests.sim_fixtures import running_sim
from vastfleet.market.retry import RetryPolicy
from vastfleet.market.vast import VastMarketplace
from vastfleet.queue import JobStore
from vastfleet.scheduler import salvage as sv
from vastfleet.scheduler.actions import ActionContext
from vastfleet.scheduler.labels import label_for
from vastfleet.scheduler.supervise import PendingCheckpoint
from vastfleet.spec.job import JobState
from vastfleet.spec.market import CreateRequest, OfferQuery
from vastfleet.storage.local import LocalCheckpointStore
from vastfleet.storage.manifest import FileEntry, Manifest

pytestmark = pytest.mark.slow


def test_a_salvage_waits_for_an_offline_host_without_spending_its_tries(tmp_path: Path, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = JobStore(client)
    with running_sim(tmp_path, seed=5, hosts=8) as sim:
        market = VastMarketplace(sim.api_key, sim.url, retry=RetryPolicy.fast(attempts=2))
        job = store.submit(make_spec(interruptible="never"))
        job = store.transition(job.id, JobState.PLACING, "test placed")
        offer = market.search_offers(OfferQuery(limit=1, verified=None))[0]
        iid = market.create_instance(offer.id, CreateRequest(image="x", disk_gb=10, onstart="sleep 600",
                                                             label=label_for(job.id, job.epoch)))
        store.transition(job.id, JobState.BOOTING, "test created", expected_epoch=job.epoch, instance_id=iid)
        store.transition(job.id, JobState.INTERRUPTED, "test lost", expected_epoch=job.epoch)
        # what the agent wrote and never uploaded, as its heartbeat named it
        data = json.dumps({"step": 7}).encode()
        folder = sim.sandbox(iid) / ".vastfleet" / "ckpt" / "step-7"
        folder.mkdir(parents=True)
        (folder / "state.json").write_bytes(data)
        manifest = Manifest(step=7, files={"state.json": FileEntry(size=len(data),
                                                                   sha256=hashlib.sha256(data).hexdigest())})
        ckpt_dir = tmp_path / "ckpt"
        sim.sim.connection_dirs["1001"] = ckpt_dir
        ctx = ActionContext(store=store, market=market, redis=client, build_request=lambda *a: None,  # type: ignore[arg-type,return-value]
                            ckpt=LocalCheckpointStore(ckpt_dir, "s" * 32), salvage_connection="1001")
        book = sv.Salvages(client)
        book.start(job.id, job.epoch, iid, PendingCheckpoint(7, "step-7", manifest.digest, 1, len(data)), 0.0)

        host = sim.sim.market.instances[iid].host_id
        sim.admin.host_offline(host)
        for _ in range(5):  # more refusals than tries: none is spent
            assert sv.salvage(ctx, job.id, tries=3) == "queued"
        rec = book.get(job.id)
        assert rec is not None and rec.status == "queued" and rec.tries == 0, rec
        assert "offline" in rec.reason

        sim.admin.fault(503, count=10, path="/api/v0/commands/rclone")  # vast's API failing: no try either
        assert sv.salvage(ctx, job.id, tries=3) == "queued"
        assert book.get(job.id).tries == 0  # type: ignore[union-attr]
        sim.admin.clear_faults()

        sim.admin.host_online(host)
        assert sv.salvage(ctx, job.id, tries=3) == "done"
        committed = store.get(job.id).latest_checkpoint
        assert committed is not None and committed.step == 7 and committed.epoch == job.epoch

        market.destroy_instance(iid)  # an instance gone: given up at once, not after the tries
        job2 = store.get(job.id)
        book.start(job2.id, job2.epoch + 1, iid, PendingCheckpoint(8, "step-8", "0" * 12, 1, 1), 0.0)
        rec = book.get(job.id)
        assert rec is not None and rec.epoch == job2.epoch + 1
        assert sv.salvage(ctx, job.id, tries=3) == "failed"
    client.close()
