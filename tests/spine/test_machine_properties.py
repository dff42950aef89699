"""Property tests of the state machine: no sequence of calls reaches an illegal state, and the indexes,
the priority queue and the event streams always agree with the records.

The high-volume run uses fakeredis (pure logic, with its Lua engine); one smaller run uses the real server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import fakeredis
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from tests.spine.conftest import FakeClock, make_spec
from vastfleet.errors import IllegalTransition, StaleEpoch
from vastfleet.queue import ALLOWED, JobStore
from vastfleet.spec import JobState


@dataclass
class Expected:
    state: JobState
    epoch: int
    priority: int
    order: int  # submit order
    events: int


def store_machine(connect: Callable[[], redis.Redis]) -> type[RuleBasedStateMachine]:
    class StoreMachine(RuleBasedStateMachine):
        jobs = Bundle("jobs")

        def __init__(self) -> None:
            super().__init__()
            self.client = connect()
            self.client.flushall()
            self.clock = FakeClock()
            self.store = JobStore(self.client, clock=self.clock)
            self.model: dict[str, Expected] = {}

        @rule(target=jobs, priority=st.integers(-2, 2))
        def submit(self, priority: int) -> str:
            self.clock.advance(1)
            job = self.store.submit(make_spec(priority=priority))
            self.model[job.id] = Expected(JobState.PENDING, 0, priority, len(self.model), 1)
            return job.id

        @rule(job_id=jobs, to=st.sampled_from(JobState), fence=st.sampled_from([None, 0, -1, 1]))
        def transition(self, job_id: str, to: JobState, fence: int | None) -> None:
            want = self.model[job_id]
            expected_epoch = None if fence is None else want.epoch + fence
            if expected_epoch is not None and expected_epoch != want.epoch:
                outcome: type[Exception] | None = StaleEpoch
            elif to not in ALLOWED[want.state]:
                outcome = IllegalTransition
            else:
                outcome = None
            try:
                job = self.store.transition(job_id, to, f"to {to.value}", expected_epoch=expected_epoch)
            except (StaleEpoch, IllegalTransition) as exc:
                assert type(exc) is outcome, f"{want.state}->{to} fence {fence}: raised {exc!r}"
                return
            assert outcome is None, f"{want.state}->{to} fence {fence} applied"
            if want.state == JobState.PENDING and to == JobState.PLACING:
                want.epoch += 1
            want.state = to
            want.events += 1
            assert (job.state, job.epoch) == (want.state, want.epoch)

        @rule(job_id=jobs)
        def cancel(self, job_id: str) -> None:
            want = self.model[job_id]
            try:
                self.store.cancel(job_id)
            except IllegalTransition:
                assert want.state.terminal
                return
            assert not want.state.terminal
            want.state, want.events = JobState.CANCELLED, want.events + 1

        @rule(job_id=jobs, fence=st.sampled_from([0, -1, 1]), cost=st.floats(0, 100))
        def update(self, job_id: str, fence: int, cost: float) -> None:
            want = self.model[job_id]
            try:
                job = self.store.update(job_id, expected_epoch=want.epoch + fence, cost_usd=cost)
            except StaleEpoch:
                assert fence != 0
                return
            assert fence == 0 and job.cost_usd == cost and (job.state, job.epoch) == (want.state, want.epoch)

        @invariant()
        def records_and_indexes_agree(self) -> None:
            for state in JobState:
                assert set(self.store.ids(state)) == {i for i, w in self.model.items() if w.state == state}
            for job_id, want in self.model.items():
                job = self.store.get(job_id)
                assert (job.state, job.epoch) == (want.state, want.epoch)
                assert len(self.store.events(job_id)) == want.events
            pending = [j.id for j in self.store.pending()]
            expected = sorted((i for i, w in self.model.items() if w.state == JobState.PENDING),
                              key=lambda i: (-self.model[i].priority, self.model[i].order))
            assert pending == expected

        def teardown(self) -> None:
            self.client.close()

    return StoreMachine


def test_state_machine_properties_on_fakeredis() -> None:
    server = fakeredis.FakeServer()
    machine = store_machine(lambda: fakeredis.FakeRedis(server=server, decode_responses=True))
    run_state_machine_as_test(machine, settings=settings(max_examples=60, stateful_step_count=25,
                                                         deadline=None, suppress_health_check=list(HealthCheck)))


def test_state_machine_properties_on_real_redis(redis_url: str) -> None:
    machine = store_machine(lambda: redis.Redis.from_url(redis_url, decode_responses=True))
    run_state_machine_as_test(machine, settings=settings(max_examples=30, stateful_step_count=20,
                                                         deadline=None, suppress_health_check=list(HealthCheck)))
