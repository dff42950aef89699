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
