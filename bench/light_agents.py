"""A simulator runner for benchmarks of thousands of instances: each instance's agent is a small task in one
thread instead of three Python processes, speaking the agent API exactly as `vastfleet.agent.agent` does for a
job that only sleeps: claim with the onstart token and a saved nonce, re-claim with the session after a
pause, heartbeat every interval, finish with exit 0 after the `sleep N` of its `run`. A kill (a pause, an
outage, a destroy) ends the task at once, as SIGKILL ends the real agent. The control plane cannot tell the
difference; only this machine's memory can (2,000 real agents need ~50 GB).
"""

from __future__ import annotations

import heapq
import re
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from vastfleet.sim.entities import Instance, Machine


@dataclass
class _Agent:
    instance_id: int
    api: str
    job_id: str
    token: str
    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    session: str | None = None
    generation: int = 0  # bumped by each start and kill: a task of an older start stops
    claimed: int = -1  # the generation that claimed (each container start claims, then runs from scratch)
    started: float = 0.0
    sleep_s: float = 0.0
    interval: float = 5.0


class LightAgents:
    """The `Runner` protocol of `vastfleet.sim.runner` (start, kill, remove) plus `close`."""

    def __init__(self, workers: int = 16) -> None:
        self.agents: dict[int, _Agent] = {}
        self.lock = threading.Lock()
        self.client = httpx.Client(timeout=30.0, limits=httpx.Limits(max_connections=workers * 2))
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="light-agent")
        self.queue: list[tuple[float, int, int]] = []  # (due, instance id, generation)
        self.wake = threading.Condition(self.lock)
        self.stopping = False
        self.calls = 0
        self.errors = 0
        self.thread = threading.Thread(target=self._loop, name="light-agents", daemon=True)
        self.thread.start()

    # --- the Runner protocol ---------------------------------------------------------------------------

    def start(self, inst: Instance, machine: Machine) -> None:
        env = inst.env
        with self.lock:
            agent = self.agents.get(inst.id)
            if agent is None:
                agent = _Agent(inst.id, env.get("VASTFLEET_API", ""), env.get("VASTFLEET_JOB_ID", ""),
                               env.get("VASTFLEET_AGENT_TOKEN", ""))
                self.agents[inst.id] = agent
            agent.generation += 1
            heapq.heappush(self.queue, (time.monotonic(), inst.id, agent.generation))
            self.wake.notify()

    def kill(self, instance_id: int) -> None:
        with self.lock:
            agent = self.agents.get(instance_id)
            if agent is not None:
                agent.generation += 1

    def remove(self, instance_id: int) -> None:
        with self.lock:
            agent = self.agents.pop(instance_id, None)
            if agent is not None:
                agent.generation += 1

    def close(self) -> None:
        with self.lock:
            self.stopping = True
            for agent in self.agents.values():
                agent.generation += 1
            self.wake.notify()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()

    # what the simulator's HTTP face asks of a runner beyond the protocol
    def log_text(self, instance_id: int) -> str:
        return ""

    def info(self, instance_id: int) -> dict[str, Any]:
        with self.lock:
            agent = self.agents.get(instance_id)
        return {"alive": agent is not None, "light": True}

    # --- the agents ------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self.lock:
                while not self.stopping and (not self.queue or self.queue[0][0] > time.monotonic()):
                    self.wake.wait(timeout=None if not self.queue else max(0.0, self.queue[0][0] - time.monotonic()))
                if self.stopping:
                    return
                _, iid, gen = heapq.heappop(self.queue)
            self.pool.submit(self._step, iid, gen)

    def _current(self, iid: int, gen: int) -> _Agent | None:
        with self.lock:
            agent = self.agents.get(iid)
            return agent if agent is not None and agent.generation == gen else None

    def _again(self, iid: int, gen: int, delay: float) -> None:
        with self.lock:
            if self.stopping:
                return
            heapq.heappush(self.queue, (time.monotonic() + delay, iid, gen))
            self.wake.notify()

    def _post(self, agent: _Agent, verb: str, body: dict[str, Any], token: str) -> httpx.Response:
        self.calls += 1
        return self.client.post(f"{agent.api}/v1/agent/jobs/{agent.job_id}/{verb}", json=body,
                                headers={"Authorization": f"Bearer {token}"})

    def _step(self, iid: int, gen: int) -> None:
        agent = self._current(iid, gen)
        if agent is None:
            return
        try:
            if agent.claimed != gen and not self._claim(agent, gen):
                return
            self._beat(agent, gen)
        except httpx.HTTPError:
            self.errors += 1
            self._again(iid, gen, 1.0)

    def _claim(self, agent: _Agent, gen: int) -> bool:
        body: dict[str, Any] = {"gpus": ["light"], "instance_id": str(agent.instance_id), "agent": "light"}
        if agent.session is None:
            body["nonce"] = agent.nonce
        resp = self._post(agent, "claim", body, agent.session or agent.token)
        if resp.status_code in (401, 403, 404, 409, 422):
            return False  # this attempt is over (or never ours): exit, as the agent does
        if resp.status_code >= 400:
            self.errors += 1
            self._again(agent.instance_id, gen, 1.0)
            return False
        answer = resp.json()
        agent.session = answer.get("session") or agent.session or agent.token  # (older APIs: the token)
        agent.interval = float(answer.get("heartbeat_interval") or 5.0)
        found = re.fullmatch(r"\s*sleep\s+([0-9.]+)\s*", str(answer.get("run") or ""))
        agent.sleep_s = float(found.group(1)) if found else 0.0
        agent.claimed, agent.started = gen, time.monotonic()
        return True

    def _beat(self, agent: _Agent, gen: int) -> None:
        assert agent.session is not None
        ran = time.monotonic() - agent.started
        if ran >= agent.sleep_s:
            if self._current(agent.instance_id, gen) is not None:
                self._post(agent, "finish", {"exit_code": 0}, agent.session)
            return
        progress = {"fraction": round(ran / max(agent.sleep_s, 1e-9), 4)}
        resp = self._post(agent, "heartbeat", {"progress": progress, "phase": "running"}, agent.session)
        if resp.status_code == 409:
            return  # stop: the attempt moved on
        if resp.status_code >= 400:
            self.errors += 1
        self._again(agent.instance_id, gen, min(agent.interval, max(agent.sleep_s - ran, 0.05)))
