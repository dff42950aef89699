"""The nouns of the simulated marketplace: hosts, machines, instances, competing claims, knobs and quirks.

Plain dataclasses with no behaviour beyond small derived figures; the rules that move them live in
`model.py` (renting, priorities) and `events.py` (what the market does by itself). Never does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

HOURS_PER_MONTH = 720.0  # vast prices storage per GB per 30-day month


@dataclass
class Host:
    id: int
    reliability: float  # 0..1; also drives the outage hazard
    verified: bool
    geolocation: str  # "City, CC" as vast shows it
    hosting_type: int  # 1 = datacenter
    online: bool = True
    offline_until: float | None = None  # None while offline = until an admin brings it back


@dataclass
class Machine:
    id: int
    host_id: int
    gpu_name: str
    num_gpus: int
    gpu_ram_gb: float
    cuda_max_good: float
    dlperf_per_gpu: float
    dph_per_gpu: float  # on-demand compute price per GPU
    min_bid_per_gpu: float  # the host's floor for interruptible use
    storage_cost: float  # $/GB/month
    inet_up: float  # Mbps
    inet_down: float
    inet_up_cost: float  # $/GB
    inet_down_cost: float
    disk_space: float  # GB
    cpu_cores: int
    cpu_ram_gb: float
    driver_version: str
    compute_cap: int
    direct_port_count: int
    public_ip: str
    pcie_bw: float
    cpu_ghz: float
    max_days: float


class Phase(str, Enum):
    """The simulator's truth about an instance (what `actual_status` only approximates)."""

    loading = "loading"  # GPUs held, image loading until boot_at
    running = "running"  # GPUs held, onstart process started
    scheduling = "scheduling"  # wants to run, lacks its GPUs (outbid, raced, or its GPU taken while stopped)
    stopped = "stopped"  # intended stopped: disk kept, storage billed
    offline = "offline"  # its host is down


ACTIVE_PHASES = (Phase.loading, Phase.running)


@dataclass
class Instance:
    id: int
    machine_id: int
    host_id: int
    gpu_ids: tuple[int, ...]
    image: str
    disk_gb: float
    env: dict[str, str]
    onstart: str
    label: str | None
    runtype: str | None
    is_bid: bool
    price: float  # compute $/h: the bid for interruptible, the on-demand dph_base otherwise
    min_bid: float  # the offer's min_bid when rented
    created_at: float
    seq: int  # creation order, the last tie-breaker between claims
    intended: str = "running"  # running | stopped
    phase: Phase = Phase.scheduling
    phase_since: float = 0.0
    boot_at: float | None = None
    start_date: float | None = None  # first time it ran
    status_msg: str = ""
    ports: dict[str, int] = field(default_factory=dict)  # "8081/tcp" -> host port
    zombie_at: float | None = None
    destroyed_at: float | None = None  # set while a destroyed instance still shows (the ghost quirk)
    starts: int = 0  # how many times onstart was launched

    @property
    def holds_gpus(self) -> bool:
        return self.phase in ACTIVE_PHASES

    def price_per_gpu(self) -> float:
        return self.price / max(1, len(self.gpu_ids))


@dataclass
class Claim:
    """A competing renter's hold on some GPUs of a machine: an on-demand rental or a bid."""

    id: int
    machine_id: int
    gpu_ids: tuple[int, ...]
    ondemand: bool
    price_per_gpu: float
    seq: int
    until: float | None  # when the renter leaves; None = until cleared
    holding: bool = False


@dataclass
class Knobs:
    """Tunable rates of the market; all zero for tests unless a test turns one on."""

    boot_delay: float = 0.0  # seconds of `loading` before running
    bid_arrival_rate: float = 0.0  # competing bids per second, market-wide
    bid_duration: float = 300.0  # mean seconds a competing bid stays
    ondemand_arrival_rate: float = 0.0  # competing on-demand rentals per second, market-wide
    ondemand_duration: float = 600.0
    outage_scale: float = 0.0  # host outage hazard per second = outage_scale * (1 - reliability) / 3600
    outage_duration: float = 120.0  # mean seconds a random outage lasts
    zombie_delay: float = 30.0  # seconds until a paused instance wakes by itself (zombie quirk)
    ghost_seconds: float = 10.0  # how long a destroyed instance still shows as stopped (ghost quirk)
    cur_state_lie_rate: float = 1.0  # share of renders whose cur_state is wrong (cur_state_lies quirk)
    rate_limit_interval: float = 1.0  # min seconds between calls to one endpoint (rate_limits quirk)
    error_rate: float = 0.05  # share of calls answered 5xx (error_bursts quirk)
    credit: float = 1000.0  # the account's starting credit in $
    min_credit_hours: float = 1.0  # a create needs this many hours of the instance's rate in credit

    def update(self, values: dict[str, Any]) -> None:
        known = {f.name: f.type for f in fields(self)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise KeyError(f"unknown knob(s) {', '.join(unknown)}; known: {', '.join(known)}")
        for name, value in values.items():
            setattr(self, name, float(value))


QUIRK_NAMES = (
    "v0_listing_gone",  # GET /api/v0/instances/ answers 410 (vast deprecated it)
    "offer_race",  # a create on an offer just rented by someone else succeeds, and sits in scheduling
    "zombie",  # a paused instance resumes by itself zombie_delay seconds later
    "destroyed_ghost",  # a destroyed instance shows again as stopped for ghost_seconds
    "cur_state_lies",  # cur_state disagrees with the truth
    "rate_limits",  # 429 when one endpoint is called again within rate_limit_interval
    "error_bursts",  # random 5xx answers at error_rate
    "insufficient_bid_stopped",  # a bid below min_bid creates the instance stopped (else: 400)
)

DEFAULT_QUIRKS = {"v0_listing_gone": True, "insufficient_bid_stopped": True}


def quirks_from(values: dict[str, bool] | None = None) -> dict[str, bool]:
    out = {name: DEFAULT_QUIRKS.get(name, False) for name in QUIRK_NAMES}
    unknown = sorted(set(values or {}) - set(out))
    if unknown:
        raise KeyError(f"unknown quirk(s) {', '.join(unknown)}; known: {', '.join(QUIRK_NAMES)}")
    for name, on in (values or {}).items():
        out[name] = bool(on)
    return out


class SimError(Exception):
    """An answer the simulated API gives instead of a result: HTTP status, vast's error code, a message."""

    def __init__(self, status: int, code: str, msg: str) -> None:
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg

    def body(self) -> dict[str, Any]:
        return {"success": False, "error": self.code, "msg": self.msg}
