"""The nouns of a reconcile pass: what is observed (`Snapshot`), what is decided (the actions of a `Plan`),
the bounds it decides by (`PlanParams`), and the one protocol the policy answers through (`Placer`).

Plain data: no behaviour beyond small derived values, no I/O. `plan.decide` fills a `Plan` from a `Snapshot`;
`apply.Applier` executes it; the policy (`Placer`) is asked once per pass for its decisions on the attempts
and jobs `decide` hands it (`PolicyRequest`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from vastfleet.scheduler.policy.fleet import FleetBudget, Holdings
from vastfleet.scheduler.policy.hazard import FleetStats
from vastfleet.scheduler.policy.step import Decision
from vastfleet.scheduler.policy.types import Wait
from vastfleet.scheduler.salvage import SalvageRecord
from vastfleet.scheduler.spend import Burn
from vastfleet.scheduler.supervise import Beat, Cause, PendingCheckpoint, Timings, Verdict
from vastfleet.spec.job import Job, JobState
from vastfleet.spec.market import Instance, Offer


@dataclass(frozen=True)
class Transition:
    job_id: str
    to: JobState
    reason: str
    expected_epoch: int
    fields: Mapping[str, Any] = field(default_factory=dict)
    cause: Cause | None = None  # for a loss (-> INTERRUPTED): how it was lost, for host exclusion and learning


@dataclass(frozen=True)
class Create:
    job_id: str
    epoch: int  # the epoch the instance is for; for a new placement, the one PENDING -> PLACING creates
    offer_id: int
    bid: float | None
    reason: str = ""


@dataclass(frozen=True)
class Destroy:
    instance_id: int
    job_id: str | None
    epoch: int | None
    reason: str


@dataclass(frozen=True)
class Forget:
    instance_id: int
    reason: str
    job_id: str | None = None  # whose history says the instance is gone


@dataclass(frozen=True)
class RaiseBid:
    """Change an interruptible instance's bid (vast's `change bid`); `start` restarts a paused one. A running
    instance whose lowest running bid fell gets a lower bid with start=False: no restart, nothing lost.
    `ceiling`: the applier refuses a price above it (the offer's on-demand price or the fleet's ceiling)."""

    job_id: str
    instance_id: int
    price: float
    reason: str
    start: bool = True
    ceiling: float = float("inf")
    fields: Mapping[str, Any] = field(default_factory=dict)  # written to the job with the new bid


@dataclass(frozen=True)
class Salvage:
    """Copy an interrupted attempt's pending checkpoint off its disk, verify it, commit it (salvage.py); the
    job stays INTERRUPTED and the instance is kept until it is done or given up."""

    job_id: str
    epoch: int
    instance_id: int
    pending: PendingCheckpoint
    reason: str



@dataclass(frozen=True)
class StartMove:
    """The policy moves a running attempt (a cheaper offer, on demand for its deadline, back to bids): ask its
    agent for a checkpoint now and mark the job; once that checkpoint is committed the attempt ends (MOVED)
    and the job is placed again, then the old instance is destroyed. Nothing is lost."""

    job_id: str
    epoch: int
    reason: str
    fields: Mapping[str, Any] = field(default_factory=dict)


Action = Transition | Create | Destroy | Forget | RaiseBid | Salvage | StartMove


@dataclass
class PolicyRequest:
    """What a pass asks of the policy: the jobs to place, the paused attempts to raise or move, the running
    ones it may move or re-bid, with the offers searched for them and the fleet's holdings and caps."""

    now: float
    offers: Mapping[str, Sequence[Offer]]
    holdings: Holdings = field(default_factory=Holdings)
    budget: FleetBudget = field(default_factory=FleetBudget)
    pending: list[Job] = field(default_factory=list)
    paused: list[tuple[Job, Instance]] = field(default_factory=list)
    running: list[tuple[Job, Instance]] = field(default_factory=list)
    rebalance: bool = False  # running attempts may be moved this pass (cheaper offer, back to bids)


class Placer(Protocol):
    """The policy as the loop and `decide` use it (`policy_adapter.PolicyPlacer`; `placement.SimplePlacer`).
    `decide` reads frozen estimates; `learn` updates them after the pass."""

    waits: list[Wait]  # the jobs the last decision kept waiting, and why

    def decide(self, request: PolicyRequest) -> list[Decision]: ...

    def learn(self, snap: Snapshot, lost: Sequence[tuple[str, Cause]], now: float) -> None: ...

    def exclude_hosts(self, hosts: frozenset[int]) -> None: ...

    def memory(self) -> FleetStats | None: ...

    def recall(self, stats: FleetStats) -> None: ...


@dataclass(frozen=True)
class PlanParams:
    timings: Timings = field(default_factory=Timings)
    outbid_wait_s: float = 10.0  # a paused bid may come back by itself: wait (since its last beat), then decide
    label_prefix: str = "vf"
    max_fruitless: int = 6  # attempts in a row without progress before the job fails (every cause counts)
    max_rebids: int = 3  # raises of one paused attempt's bid before it moves; each waits twice as long
    move_timeout_s: float = 600.0  # a move whose checkpoint does not come by then moves from the last one
    rebalance_every_s: float = 1800.0  # how often running attempts may be moved (a cheaper offer, bids again)
    salvage: bool = False  # copy a lost attempt's pending checkpoint off its disk (needs a cloud connection)
    salvage_timeout_s: float = 600.0  # a salvage not done by then is given up (the job goes on without it)
    quarantine_keep_s: float = 6 * 3600.0  # an instance of a job whose record is quarantined is kept this long
    # The fleet's caps, enforced before a rental (running work goes on): $/h of all our rentals; $ spent in a
    # UTC day or month, with an hour of the current burn kept in hand; and a reserve of the account's credit.
    max_usd_per_hour: float | None = None
    max_usd_per_day: float | None = None
    max_usd_per_month: float | None = None
    credit_reserve_usd: float = 0.0


@dataclass(frozen=True)
class Snapshot:
    jobs: Mapping[str, Job]  # non-terminal jobs, plus any job a labelled instance names (None: unknown)
    instances: Sequence[Instance]  # one successful listing; never a failed one taken as empty
    beats: Mapping[str, Beat] = field(default_factory=dict)
    offers: Mapping[str, Sequence[Offer]] = field(default_factory=dict)  # per pending job id
    creating: frozenset[tuple[str, int]] = frozenset()  # (job, epoch) creates in flight
    obligations: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)  # instance id -> why
    destroying: frozenset[int] = frozenset()  # destroys in flight
    quarantined: Mapping[str, float] = field(default_factory=dict)  # job id -> when its record was set aside
    burn: Burn | None = None  # what the fleet costs now and has cost (the spend ledger); None: not known
    balance: float | None = None  # the account's credit, when read this pass
    salvages: Mapping[str, SalvageRecord] = field(default_factory=dict)  # job id -> its attempt's salvage


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    verdicts: dict[int | str, Verdict] = field(default_factory=dict)  # instance id (or job id) -> verdict
    waiting: dict[int, str] = field(default_factory=dict)  # instances teardown keeps, and why

    def of(self, kind: type) -> list[Any]:
        return [a for a in self.actions if isinstance(a, kind)]

    def __bool__(self) -> bool:
        return bool(self.actions)
