"""Plain models of the marketplace's offers and instances: the fields the scheduler needs, in our units.

The adapter (`vastfleet.market`) builds these from vast's JSON; the policy and the benchmark read them.
Names follow vast's where they exist (`dph_total`, `min_bid`, `dlperf`, `actual_status`).
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class BidKind(str, Enum):
    on_demand = "on_demand"
    bid = "bid"  # interruptible


class Offer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    id: int  # the ask id to create an instance on
    machine_id: int
    host_id: int
    gpu_name: str
    num_gpus: int
    gpu_ram_gb: float  # per GPU
    cuda_max_good: float
    dlperf: float  # whole machine
    dph_total: float  # on-demand $/h, whole offer, storage included at the searched size
    min_bid: float  # lowest accepted bid $/h for interruptible use
    dph_base: float = 0.0  # on-demand compute $/h without storage (0: unknown, dph_total stands in)
    storage_cost: float = 0.0  # $/GB/month
    inet_up: float = 0.0  # Mbps
    inet_down: float = 0.0
    inet_up_cost: float = 0.0  # $/GB
    inet_down_cost: float = 0.0
    disk_space: float = 0.0  # GB free
    reliability: float = 0.0  # 0..1
    verified: bool = False
    direct_port_count: int = 0
    geolocation: str = ""
    is_bid: bool = False  # the search asked for interruptible prices
    cpu_cores_effective: float = 0.0  # the CPU share an instance of this offer gets (0: unknown)


class InstanceStatus(str, Enum):
    created = "created"
    loading = "loading"
    running = "running"
    stopped = "stopped"
    frozen = "frozen"
    exited = "exited"
    rebooting = "rebooting"
    unknown = "unknown"
    offline = "offline"
    scheduling = "scheduling"


class Instance(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: int
    label: str | None = None
    machine_id: int | None = None
    host_id: int | None = None
    gpu_name: str | None = None
    num_gpus: int = 0
    actual_status: str | None = None
    intended_status: str | None = None
    cur_state: str | None = None
    next_state: str | None = None
    status_msg: str | None = None
    start_date: float | None = None
    dph_total: float = 0.0
    dph_base: float | None = None  # the compute $/h it pays (its bid, or the on-demand price)
    storage_dph: float | None = None  # its disk's $/h, billed in every state until destroyed
    is_bid: bool = False
    min_bid: float | None = None
    bid_price: float | None = None
    disk_space: float | None = None
    public_ipaddr: str | None = None
    ports: dict[str, Any] = Field(default_factory=dict)
    image_uuid: str | None = None
    reliability: float | None = None
    gpu_ids: tuple[int, ...] | None = None  # the machine's GPUs it holds or waits for, when the listing says


class OfferQuery(BaseModel):
    """What to search for; the adapter turns it into vast's query (and the simulator answers it)."""

    model_config = ConfigDict(extra="forbid")
    gpu_names: list[str] = Field(default_factory=list)  # vast spelling; empty = any
    num_gpus: int | None = None
    min_gpu_ram_gb: float | None = None
    min_cuda: float | None = None
    min_disk_gb: float | None = None
    min_reliability: float | None = None
    min_direct_ports: int | None = None
    min_inet_down_mbps: float | None = None
    max_dph: float | None = None
    verified: bool | None = True
    geolocations: list[str] | None = None
    kind: BidKind = BidKind.on_demand
    order: list[tuple[str, str]] = Field(default_factory=lambda: [("dph_total", "asc")])
    limit: int | None = 200
    disk_gb: float = 10.0  # storage to price the offers at


class CreateRequest(BaseModel):
    """An instance to rent. `bid` set = interruptible at that $/h; None = on demand."""

    model_config = ConfigDict(extra="forbid")
    image: str
    disk_gb: float
    label: str  # names job and epoch: how we recognise our instances after a restart
    onstart: str
    env: dict[str, str] = Field(default_factory=dict)
    ports: list[int] = Field(default_factory=list)
    bid: float | None = None
    runtype: str = "args"
