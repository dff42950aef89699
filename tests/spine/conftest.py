"""Fixtures of the spine tests: a job store on the real redis-server, a driven clock, spec factories."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.helpers import FakeClock
from vastfleet.api import ApiContext, create_app
from vastfleet.api.serve import ServerThread
from vastfleet.queue import JobStore
from vastfleet.spec import JobSpec, job_spec_from_dict


def spec_dict(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"name": "train", "image": "pytorch/pytorch:2.3.0", "run": "python train.py",
                            "resources": {"gpu": ["RTX_4090"]}}
    data.update(overrides)
    return data


def make_spec(**overrides: Any) -> JobSpec:
    return job_spec_from_dict(spec_dict(**overrides))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(redis_client: redis.Redis, clock: FakeClock) -> JobStore:
    return JobStore(redis_client, clock=clock)


TOKEN = "test-user-token"


@pytest.fixture
def api(store: JobStore) -> Iterator[str]:
    """The real API under uvicorn on a free loopback port, over the real redis-server; yields its URL."""
    with ServerThread(create_app(ApiContext(store=store, token=TOKEN))) as url:
        yield url


@pytest.fixture
def http(api: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client
