"""Translation between vast.ai's JSON and our models, both ways. Pure: no I/O, no client.

Owns: `OfferQuery` -> the query dict `vastai.api.offers.search_offers` posts (vast's units: gpu_name with
spaces, gpu_ram in MB = GB x 1000), `CreateRequest` -> the arguments of the client's create call, and
vast's offer and instance rows -> `Offer` / `Instance`. Never calls vast, never retries. Input that vast
could never accept raises BadInput. A row we cannot
read raises `MalformedAnswer` (the adapter maps it to MarketError) rather than being skipped silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vastfleet.errors import BadInput
from vastfleet.market.errors import MalformedAnswer
from vastfleet.spec.market import BidKind, CreateRequest, Instance, Offer, OfferQuery

MB_PER_GB = 1000.0  # vast's query language multiplies gpu_ram/cpu_ram GB by 1000 (not 1024)

# Fields an order clause may name: the offer fields vast sorts by (its query language's field list).
ORDERABLE = {
    "dph_total",
    "dph_base",
    "min_bid",
    "dlperf",
    "dlperf_per_dphtotal",
    "total_flops",
    "flops_per_dphtotal",
    "reliability",
    "reliability2",
    "score",
    "num_gpus",
    "gpu_ram",
    "gpu_total_ram",
    "cuda_max_good",
    "disk_space",
    "inet_down",
    "inet_up",
    "inet_down_cost",
    "inet_up_cost",
    "storage_cost",
    "cpu_cores",
    "cpu_cores_effective",
    "cpu_ram",
    "direct_port_count",
    "duration",
    "id",
    "machine_id",
    "host_id",
    "compute_cap",
    "driver_version",
    "geolocation",
    "gpu_name",
}

# The defaults `vastai search offers` merges into every search; we send them explicitly (no_default=True)
# so that `verified=None` (any) can leave `verified` out.
_DEFAULT_FILTERS: dict[str, dict[str, Any]] = {
    "external": {"eq": False},
    "rentable": {"eq": True},
    "rented": {"eq": False},
}


def offer_search_args(query: OfferQuery) -> dict[str, Any]:
    """Keyword arguments for `vastai.api.offers.search_offers` (query, offer_type, order, limit, storage)."""
    q: dict[str, Any] = {k: dict(v) for k, v in _DEFAULT_FILTERS.items()}
    if query.verified is not None:
        q["verified"] = {"eq": query.verified}
    names = [n.replace("_", " ").strip() for n in query.gpu_names if n.strip()]
    if len(names) == 1:
        q["gpu_name"] = {"eq": names[0]}
    elif names:
        q["gpu_name"] = {"in": names}
    if query.num_gpus is not None:
        q["num_gpus"] = {"eq": query.num_gpus}
    if query.min_gpu_ram_gb is not None:
        q["gpu_ram"] = {"gte": query.min_gpu_ram_gb * MB_PER_GB}
    if query.min_cuda is not None:
        q["cuda_max_good"] = {"gte": query.min_cuda}
    if query.min_disk_gb is not None:
        q["disk_space"] = {"gte": query.min_disk_gb}
    if query.min_reliability is not None:
        q["reliability"] = {"gte": query.min_reliability}
    if query.min_direct_ports is not None:
        q["direct_port_count"] = {"gte": query.min_direct_ports}
    if query.min_inet_down_mbps is not None:
        q["inet_down"] = {"gte": query.min_inet_down_mbps}
    if query.max_dph is not None:
        q["dph_total"] = {"lte": query.max_dph}
    if query.geolocations:
        q["geolocation"] = {"in": [g.strip() for g in query.geolocations if g.strip()]}
    order = []
    for name, direction in query.order:
        d = direction.lower()
        if name not in ORDERABLE or d not in ("asc", "desc"):
            raise BadInput(
                f"cannot order offers by {name!r} {direction!r}: use a vast offer field and asc/desc"
            )
        order.append([name, d])
    return {
        "query": q,
        "offer_type": "bid" if query.kind is BidKind.bid else "on-demand",
        "order": order or [["dph_total", "asc"]],
        "limit": query.limit,
        "storage": float(query.disk_gb),
        "no_default": True,
    }


def create_args(request: CreateRequest) -> dict[str, Any]:
    """Keyword arguments for `vastai.api.instances.create_instance` (after the offer id)."""
    env: dict[str, str] = dict(request.env)
    for port in request.ports:
        if not 0 < port < 65536:
            raise BadInput(f"port {port} is out of range (1-65535)")
        # the same entry `parse_env("-p 8080:8080")` produces: docker-style option as key, "1" as value
        env[f"-p {port}:{port}"] = "1"
    return {
        "image": request.image,
        "disk": float(request.disk_gb),
        "env": env,
        "price": request.bid,  # set = interruptible at this $/h; None = on demand
        "label": request.label,
        "onstart_cmd": request.onstart,
        "runtype": request.runtype,
    }


def _num(row: Mapping[str, Any], key: str, default: float = 0.0, *alts: str) -> float:
    for k in (key, *alts):
        value = row.get(k)
        if value is None or value == "":
            continue
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise MalformedAnswer(f"field {k!r} is not a number: {value!r}") from exc
    return default


def _int(row: Mapping[str, Any], key: str, *alts: str) -> int:
    for k in (key, *alts):
        value = row.get(k)
        if value is None or isinstance(value, bool):
            continue
        try:
            return int(value)
        except (TypeError, ValueError) as exc:
            raise MalformedAnswer(f"field {k!r} is not an integer: {value!r}") from exc
    raise MalformedAnswer(f"the row has no {key!r}")


def offer_from_row(row: Any, is_bid: bool) -> Offer:
    """One of vast's offer rows as an `Offer` (gpu_ram MB -> GB per GPU)."""
    if not isinstance(row, Mapping):
        raise MalformedAnswer(f"an offer row is a {type(row).__name__}, not an object")
    gpu_ram_mb = _num(row, "gpu_ram")
    dph_total = _num(row, "dph_total")
    min_bid = _num(row, "min_bid", dph_total)
    dph_base = _num(row, "dph_base")
    if is_bid and dph_base > 0:
        # An interruptible search prices `dph_total` at the bid: the on-demand total is the base price plus the
        # storage at the searched size, which the row carries apart (else its difference from the bid).
        storage = _num(row, "storage_total_cost", max(dph_total - min_bid, 0.0))
        dph_total = max(dph_base + storage, dph_total)
    return Offer(
        id=_int(row, "id", "ask_contract_id"),
        machine_id=_int(row, "machine_id"),
        host_id=_int(row, "host_id"),
        gpu_name=str(row.get("gpu_name") or ""),
        num_gpus=int(_num(row, "num_gpus")),
        gpu_ram_gb=gpu_ram_mb / MB_PER_GB,
        cuda_max_good=_num(row, "cuda_max_good"),
        dlperf=_num(row, "dlperf"),
        dph_total=dph_total,
        min_bid=min_bid,
        dph_base=dph_base,
        storage_cost=_num(row, "storage_cost"),
        inet_up=_num(row, "inet_up"),
        inet_down=_num(row, "inet_down"),
        inet_up_cost=_num(row, "inet_up_cost"),
        inet_down_cost=_num(row, "inet_down_cost"),
        disk_space=_num(row, "disk_space"),
        reliability=_num(row, "reliability", 0.0, "reliability2"),
        verified=bool(row.get("verified", False)),
        direct_port_count=int(_num(row, "direct_port_count")),
        geolocation=str(row.get("geolocation") or ""),
        is_bid=is_bid,
        cpu_cores_effective=_num(row, "cpu_cores_effective"),
    )


def offers_from_answer(rows: Any, is_bid: bool) -> list[Offer]:
    if not isinstance(rows, list):
        raise MalformedAnswer(f"the offer list is a {type(rows).__name__}, not a list")
    return [offer_from_row(row, is_bid) for row in rows]


def _opt_num(row: Mapping[str, Any], key: str) -> float | None:
    return _num(row, key) if row.get(key) not in (None, "") else None


def _opt_int(row: Mapping[str, Any], key: str) -> int | None:
    return _int(row, key) if row.get(key) is not None else None


def _opt_str(row: Mapping[str, Any], key: str) -> str | None:
    value = row.get(key)
    return None if value is None else str(value)


def _storage_dph(row: Mapping[str, Any]) -> float | None:
    """The disk's $/h: as the row states it, else its size at the host's $/GB/month (a 30-day month)."""
    stated = _opt_num(row, "storage_total_cost")
    if stated is not None:
        return stated
    size, per_gb = _opt_num(row, "disk_space"), _opt_num(row, "storage_cost")
    return None if size is None or per_gb is None else size * per_gb / 720.0


def _gpu_ids(value: Any) -> tuple[int, ...] | None:
    """The GPU indexes an instance holds, when the row lists them as integers (else unknown: None)."""
    if not isinstance(value, list) or not all(isinstance(g, int) and not isinstance(g, bool) for g in value):
        return None
    return tuple(value)


def instance_from_row(row: Any) -> Instance:
    """One of vast's instance rows (v1 listing or single show) as an `Instance`."""
    if not isinstance(row, Mapping):
        raise MalformedAnswer(f"an instance row is a {type(row).__name__}, not an object")
    ports = row.get("ports")
    return Instance(
        id=_int(row, "id"),
        label=_opt_str(row, "label"),
        machine_id=_opt_int(row, "machine_id"),
        host_id=_opt_int(row, "host_id"),
        gpu_name=_opt_str(row, "gpu_name"),
        num_gpus=int(_num(row, "num_gpus")),
        actual_status=_opt_str(row, "actual_status"),
        intended_status=_opt_str(row, "intended_status"),
        cur_state=_opt_str(row, "cur_state"),
        next_state=_opt_str(row, "next_state"),
        status_msg=_opt_str(row, "status_msg"),
        start_date=_opt_num(row, "start_date"),
        dph_total=_num(row, "dph_total"),
        dph_base=_opt_num(row, "dph_base"),
        storage_dph=_storage_dph(row),
        is_bid=bool(row.get("is_bid", False)),
        min_bid=_opt_num(row, "min_bid"),
        bid_price=_opt_num(row, "bid_price"),
        disk_space=_opt_num(row, "disk_space"),
        public_ipaddr=_opt_str(row, "public_ipaddr"),
        ports=dict(ports) if isinstance(ports, Mapping) else {},
        image_uuid=_opt_str(row, "image_uuid"),
        gpu_ids=_gpu_ids(row.get("gpu_ids")),
        reliability=_opt_num(row, "reliability2")
        if row.get("reliability2") is not None
        else _opt_num(row, "reliability"),
    )
