"""What the API needs from the rest of the control plane, gathered in one object built by the caller.

Holds references only; never opens connections or starts anything itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter

from vastfleet.api.limits import DEFAULT_MAX_AGENT_BODY, DEFAULT_MAX_BODY
from vastfleet.queue import JobStore


@dataclass
class ApiContext:
    store: JobStore
    token: str  # the users' bearer token; agents authenticate with their own per-attempt tokens
    agent_router: APIRouter | None = None  # `/v1/agent/...`, filled by the agent part
    metrics_app: Any | None = None  # an ASGI app mounted at `/metrics`
    extra: dict[str, Any] = field(default_factory=dict)
    max_body_bytes: int = DEFAULT_MAX_BODY  # request bodies above this get 413 (every route but the agents')
    max_agent_body_bytes: int = DEFAULT_MAX_AGENT_BODY  # under /v1/agent/ (checkpoint manifests are larger)

    def __post_init__(self) -> None:
        if not self.token:
            raise ValueError("the API needs a non-empty user token")
        if self.max_body_bytes < 1 or self.max_agent_body_bytes < 1:
            raise ValueError("the API's body limits must be positive")
