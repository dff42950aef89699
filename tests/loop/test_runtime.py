"""The runtime on its fallback: no redis-server on the PATH -> fakeredis, loudly; RQ workers still act."""

from __future__ import annotations

import logging

import httpx
import pytest

from tests.helpers import wait_for
from tests.loop.factories import make_offer, make_spec
from tests.market_doubles import RecordingMarketplace
from vastfleet import runtime as rt_module
from vastfleet.runtime import Settings, build_runtime
from vastfleet.spec.job import JobState


def test_fakeredis_fallback_warns_loudly_and_still_runs_the_actions(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path) -> None:
    monkeypatch.setattr(rt_module.shutil, "which", lambda name: None)
    market = RecordingMarketplace([make_offer(1)])
    settings = Settings(api_port=0, pass_interval_s=0.05, workers=1, data_dir=tmp_path, api_token="t" * 20,
                        log_level="WARNING")
    runtime = build_runtime(settings, market=market)
    with caplog.at_level(logging.WARNING, logger="vastfleet.runtime"):
        runtime.start()
    try:
        assert "fake" in runtime.redis_kind and "IN-PROCESS FAKE REDIS" in caplog.text
        assert httpx.get(f"{runtime.public_url}/healthz").json()["status"] == "ok"
        job = runtime.store.submit(make_spec(interruptible="never"))
        booted = wait_for(lambda: (j := runtime.store.get(job.id)).state == JobState.BOOTING and j, 10,
                          what="the create to run on an RQ worker over fakeredis")
        request = market.requests[booted.instance_id]
        assert request.label == f"vf:{job.id}:1"
        assert request.env["VASTFLEET_API"] == runtime.public_url
        assert "VASTFLEET_AGENT_TOKEN" not in request.onstart and request.env["VASTFLEET_AGENT_TOKEN"] not in \
            request.onstart, "the token travels in the env, never in the stored onstart"
    finally:
        runtime.stop()


def test_the_scheduler_needs_a_marketplace_key_and_leaves_nothing_running(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vastfleet.errors import MarketAuthError

    monkeypatch.delenv("VAST_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    runtime = build_runtime(Settings(api_port=0, run_api=False, data_dir=tmp_path / "plane", vast_api_key=""))
    with pytest.raises(MarketAuthError, match="no vast.ai API key"):
        runtime.start()
    assert runtime.embedded is None and runtime.loop is None, "a failed start stops what it had started"


def test_an_action_worker_rides_out_a_redis_restart_with_one_warning(
        tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    """Redis restarted under a real RQ worker: one warning for the outage (not a traceback every 0.1 s),
    one line when it is back, and the worker takes jobs again."""
    import threading

    import redis
    from rq import Queue

    from tests.helpers import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    conn = redis.Redis.from_url(server.url)
    queue = Queue("vastfleet-test", connection=conn)
    worker = rt_module._quiet_worker_class()([queue], connection=conn, name="outage-test")
    stop = threading.Event()
    thread = threading.Thread(target=rt_module.work_loop, args=(worker, stop, 0.02, 0.05), daemon=True)
    try:
        with caplog.at_level(logging.INFO, logger="vastfleet.runtime"):
            thread.start()
            first = queue.enqueue("operator.add", 2, 3)
            wait_for(lambda: first.get_status(refresh=True) == "finished", 20, what="a job before the outage")
            server.kill9()
            wait_for(lambda: "Redis unreachable" in caplog.text, 20, what="the outage to be noticed")
            server.start()  # the same port and AOF
            again = queue.enqueue("operator.add", 4, 5)
            wait_for(lambda: again.get_status(refresh=True) == "finished", 20, what="a job after the restart")
            wait_for(lambda: "reachable again" in caplog.text, 20, what="the recovery to be told")
        assert again.return_value() == 9
        outage = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
        assert len(outage) == 1, [r.getMessage() for r in outage]
        assert not [r for r in caplog.records if r.exc_info], "no traceback for an outage"
    finally:
        stop.set()
        worker._stop_requested = True
        thread.join(10)
        conn.close()
        server.stop()
