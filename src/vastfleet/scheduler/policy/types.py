"""Plain data the policy reads and returns: job views, offer tables, parameters, placements, decisions.

Owns the shapes only; never does I/O. `OfferTable` is the struct-of-arrays form of a list of offers that the
vectorised filters and cost model work on; the benchmark builds it directly, the live loop from `Offer`s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from vastfleet.errors import BadInput
from vastfleet.spec import Job, Offer
from vastfleet.spec.gpus import gpu_model


@dataclass(frozen=True)
class JobView:
    """What the policy needs of one job, in plain numbers (seconds, hours, dollars)."""

    job_id: str
    gpu_names: tuple[str, ...]
    num_gpus: int = 1
    min_gpu_ram_gb: float = 0.0
    min_cuda: float = 0.0
    disk_gb: float = 20.0
    min_reliability: float = 0.0
    max_price_per_hour: float = float("inf")
    direct_ports: int = 0
    min_inet_down_mbps: float = 0.0
    regions: tuple[str, ...] = ()
    verified: bool = False
    interruptible: Literal["auto", "always", "never"] = "auto"
    remaining_work_hours: float = 1.0  # at ref_dlperf
    ref_dlperf: float = 0.0  # 0 = the first acceptable GPU's typical DLPerf x num_gpus
    deadline_at: float | None = None
    interruption_times: tuple[float, ...] = ()
    last_checkpoint_age_s: float = 0.0
    checkpoint_cost_s: float = 60.0  # measured upload time (or the default)
    checkpoints: bool = True  # False: the job restarts from scratch when interrupted
    checkpoint_interval_s: float | None = None  # the spec's fixed interval; None: Young/Daly (`interval: auto`)
    budget_left: float = float("inf")
    priority: int = 0
    excluded_hosts: frozenset[int] = frozenset()

    @property
    def interruptions(self) -> int:
        return len(self.interruption_times)

    def reference_dlperf(self) -> float:
        if self.ref_dlperf > 0:
            return self.ref_dlperf
        return gpu_model(self.gpu_names[0]).dlperf * self.num_gpus

    def requirement_key(self) -> tuple[Any, ...]:
        """Jobs with equal keys pass the same feasibility filters (one mask per group)."""
        return (self.gpu_names, self.num_gpus, self.min_gpu_ram_gb, self.min_cuda, self.disk_gb,
                self.min_reliability, self.max_price_per_hour, self.direct_ports, self.min_inet_down_mbps,
                self.regions, self.verified, self.excluded_hosts)


@dataclass(frozen=True)
class PolicyParams:
    restart_overhead_s: float = 300.0  # boot + image pull + restore on a new offer
    resume_overhead_s: float = 120.0  # restart in place on a paused instance (disk intact)
    launch_gb: float = 5.0  # image + checkpoint downloaded on a fresh launch
    margins: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5)  # bid over min_bid
    escalate_after: int = 6  # interruptions ...
    escalate_window_s: float = 6 * 3600.0  # ... within this window -> on demand
    deadline_guard_s: float = 600.0  # extra slack kept beyond one restart and lost work
    min_ckpt_interval_s: float = 300.0
    max_ckpt_interval_s: float = 4 * 3600.0
    prior_strength: float = 2.0  # pseudo-events of the Gamma prior
    outbid_prior_rate: float = 0.02  # competing-bid rate per hour before any observation
    outbid_prior_scale: float = 0.1  # relative size of a typical competing bid over min_bid
    candidates: int = 32  # per-job shortlist the allocator walks before recomputing
    wait_saving: float = 0.05  # wait for an offer that is back later only when it saves this share
    # The fleet's price ceiling per GPU-hour (bids and on demand alike): a multiple of the catalogue's typical
    # on-demand price, and a flat bound for models the catalogue lacks. Bids also stay under the offer's own
    # on-demand price and the job's cap.
    max_price_factor: float = 3.0
    max_price_per_gpu_hour: float = 50.0
    max_rebids: int = 3  # raises of one paused attempt's bid before it moves
    lower_bids: bool = True  # lower a running bid when the lowest running bid falls (vast's change bid)
    checkpoint_cost_s: float = 60.0  # the live loop's estimate of writing one checkpoint (the replay has its own)


def catalogue_dph(names: np.ndarray) -> np.ndarray:
    """The catalogue's typical on-demand $/h per GPU for each name (NaN where the model is unknown)."""
    out = np.full(len(names), np.nan)
    for name in set(names.tolist()):
        try:
            price = gpu_model(str(name)).dph
        except BadInput:
            continue
        out[names == name] = price
    return out


@dataclass
class OfferTable:
    """Offers as parallel numpy arrays (index i is one offer).

    `dph` is the on-demand compute price (storage is `storage_dph`): no bid of ours goes above it (rent on
    demand instead). `machine` says which offers share GPUs (a machine lists several bundles); `gpu_dph`
    is the catalogue price per GPU, the base of the fleet's price ceiling. Both default from the rest.
    """

    ids: np.ndarray  # int64
    host: np.ndarray  # int64
    gpu: np.ndarray  # object (str)
    num_gpus: np.ndarray
    gpu_ram: np.ndarray
    cuda: np.ndarray
    dlperf: np.ndarray
    dph: np.ndarray  # on-demand $/h
    min_bid: np.ndarray  # $/h, the lowest bid that runs now
    storage_dph: np.ndarray  # $/h for the job's disk while an instance exists
    inet_down: np.ndarray
    inet_down_cost: np.ndarray  # $/GB
    disk: np.ndarray
    reliability: np.ndarray
    verified: np.ndarray  # bool
    ports: np.ndarray
    geo: np.ndarray  # object (str)
    machine: np.ndarray | None = None  # int64; default: each offer its own machine
    gpu_dph: np.ndarray | None = None  # catalogue $/h per GPU (NaN: unknown model); default from `gpu`

    def __post_init__(self) -> None:
        if self.machine is None:
            self.machine = np.asarray(self.ids, dtype=np.int64).copy()
        if self.gpu_dph is None:
            self.gpu_dph = catalogue_dph(np.asarray(self.gpu, dtype=object))

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @classmethod
    def from_offers(cls, offers: Sequence[Offer], disk_gb: float = 20.0) -> OfferTable:
        def arr(name: str, dtype: Any = float) -> np.ndarray:
            return np.array([getattr(o, name) for o in offers], dtype=dtype)

        storage = np.array([o.storage_cost * disk_gb / 730.0 for o in offers], dtype=float)
        od_compute = np.array([o.dph_base if o.dph_base > 0 else o.dph_total for o in offers], dtype=float)
        return cls(
            ids=arr("id", np.int64), host=arr("host_id", np.int64), gpu=arr("gpu_name", object),
            num_gpus=arr("num_gpus", np.int64), gpu_ram=arr("gpu_ram_gb"), cuda=arr("cuda_max_good"),
            dlperf=arr("dlperf"), dph=od_compute, min_bid=arr("min_bid"), storage_dph=storage,
            inet_down=arr("inet_down"), inet_down_cost=arr("inet_down_cost"), disk=arr("disk_space"),
            reliability=arr("reliability"), verified=arr("verified", bool), ports=arr("direct_port_count"),
            geo=arr("geolocation", object), machine=arr("machine_id", np.int64),
        )

    def take(self, idx: np.ndarray) -> OfferTable:
        return OfferTable(**{k: v[idx] for k, v in self.__dict__.items()})

    def ceiling(self, params: PolicyParams) -> np.ndarray:
        """The most we pay for compute per hour on each offer, bid or on demand: the fleet's ceiling (a multiple
        of the catalogue price, or a flat $/GPU-hour) and never above the offer's own on-demand price for a bid
        (the caller applies that one). Unknown GPU models get only the flat ceiling."""
        n = np.maximum(np.asarray(self.num_gpus, dtype=float), 1.0)
        assert self.gpu_dph is not None
        by_catalogue = np.where(np.isfinite(self.gpu_dph), self.gpu_dph * params.max_price_factor * n, np.inf)
        return np.minimum(by_catalogue, params.max_price_per_gpu_hour * n)


@dataclass
class FutureOffers:
    """Offers that cannot be rented now but are expected back: one our own job holds (free when it ends), or
    one whose host is offline or that is rented away (back after the downtime this fleet has seen).
    `table.min_bid` is the price expected then (the last lowest running bid seen); only bids are waited for."""

    table: OfferTable
    available_at: np.ndarray  # seconds, on the policy's clock
    why: list[str]

    def __len__(self) -> int:
        return len(self.table)


@dataclass(frozen=True)
class Wait:
    """A job that waits (rents nothing now) for an offer expected back at `until`."""

    job_id: str
    offer_id: int
    until: float
    expected_cost: float
    cost_now: float
    reason: str


@dataclass(frozen=True)
class Placement:
    job_id: str
    offer_id: int
    machine_id: int
    kind: Literal["on_demand", "bid"]
    bid: float | None
    expected_cost: float
    reason: str
    terms: dict[str, float | str] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """What to do with a paused (outbid) instance: raise its bid to `bid`, or move the job."""

    action: Literal["raise", "move"]
    bid: float | None
    expected_cost: float
    reason: str
    terms: dict[str, float | str] = field(default_factory=dict)


def _progress_number(progress: dict[str, Any], key: str) -> float | None:
    """A finite, non-negative number the job reported under `key`; anything else (null for a NaN, a string,
    a list) is as if not reported: a job's progress file is its own, and one bad value must not stop a pass."""
    value = progress.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def remaining_from_progress(progress: dict[str, Any], work_hours: float | None) -> float:
    """Hours of work left: `remaining_hours`, else the share done (`fraction`, or `step` of `of`/`total`) of
    `total_hours` or of the spec's `work_hours`; 1 hour when nothing says (offers then rank per hour of work)."""
    remaining = _progress_number(progress, "remaining_hours")
    if remaining is not None:
        return remaining
    fraction = _progress_number(progress, "fraction")
    if fraction is None:
        step, of = _progress_number(progress, "step"), _progress_number(progress, "of")
        of = of if of is not None else _progress_number(progress, "total")
        fraction = step / of if step is not None and of else 0.0
    total = _progress_number(progress, "total_hours")
    total = total if total is not None else work_hours
    if total is None:
        return 1.0
    return total * (1.0 - min(max(fraction, 0.0), 1.0))


def job_view_from_job(job: Job, now: float, *, remaining_work_hours: float | None = None,
                      interruption_times: tuple[float, ...] = (), checkpoint_cost_s: float = 60.0,
                      excluded_hosts: frozenset[int] = frozenset()) -> JobView:
    """Build the policy's view of a stored job. Remaining work comes from the last heartbeat's progress
    (`progress["remaining_hours"]`, or `progress["fraction"]` of `progress["total_hours"]`, else of the spec's
    `work_hours` estimate) when not given; before any progress, from `work_hours`."""
    spec = job.spec
    res = spec.resources
    if remaining_work_hours is None:
        remaining_work_hours = remaining_from_progress(job.progress or {}, spec.work_hours)
    ckpt_age = now - job.latest_checkpoint.committed_at if job.latest_checkpoint else now - job.submitted_at
    spent = job.cost_usd
    if job.pinned_on_demand:
        interruptible: Literal["auto", "always", "never"] = "never"
    else:
        interruptible = spec.interruptible.value
    return JobView(
        job_id=job.id, gpu_names=tuple(res.gpu), num_gpus=res.gpus, min_gpu_ram_gb=res.min_gpu_ram_gb or 0.0,
        min_cuda=res.min_cuda or 0.0, disk_gb=res.disk_gb, min_reliability=res.min_reliability,
        max_price_per_hour=res.max_price_per_hour or float("inf"), direct_ports=res.direct_ports,
        min_inet_down_mbps=res.min_inet_down_mbps or 0.0, regions=tuple(res.regions or ()),
        verified=res.verified, interruptible=interruptible,
        remaining_work_hours=max(remaining_work_hours, 1e-6), deadline_at=job.deadline_at,
        interruption_times=interruption_times or tuple(job.interrupted_at),
        last_checkpoint_age_s=max(ckpt_age, 0.0),
        checkpoint_cost_s=checkpoint_cost_s, checkpoints=spec.checkpoint.required,
        checkpoint_interval_s=None if spec.checkpoint.interval == "auto" else float(spec.checkpoint.interval),
        budget_left=(spec.budget_usd - spent) if spec.budget_usd else float("inf"), priority=spec.priority,
        excluded_hosts=excluded_hosts,
    )
