"""Offers and instances rendered as vast's JSON rows, with every field the client, the CLI display and the
query language read (numbers as JSON numbers, `start_date` numeric, `extra_env` as [name, value] pairs,
docker-style `ports` with string host ports). Pure functions of the market's state; never changes it.
"""

from __future__ import annotations

from typing import Any

from vastfleet.sim.catalog import numeric_driver
from vastfleet.sim.entities import HOURS_PER_MONTH, Host, Instance, Machine, Phase
from vastfleet.sim.model import Market


def machine_fields(m: Machine, host: Host, n: int) -> dict[str, Any]:
    """What an offer and an instance on this machine share (for a bundle of `n` GPUs)."""
    frac = n / m.num_gpus
    dlperf = round(m.dlperf_per_gpu * n, 3)
    return {
        "machine_id": m.id,
        "host_id": host.id,
        "gpu_name": m.gpu_name,
        "gpu_arch": "nvidia",
        "num_gpus": n,
        "gpu_ram": m.gpu_ram_gb * 1000.0,
        "gpu_total_ram": m.gpu_ram_gb * 1000.0 * n,
        "gpu_frac": frac,
        "gpu_mem_bw": round(m.gpu_ram_gb * 30.0, 1),
        "gpu_max_power": 450.0,
        "gpu_max_temp": 83.0,
        "gpu_display_active": False,
        "gpu_lanes": 16,
        "bw_nvlink": 0.0,
        "cpu_name": "AMD EPYC 7543 32-Core Processor",
        "cpu_arch": "amd64",
        "cpu_cores": m.cpu_cores,
        "cpu_cores_effective": round(m.cpu_cores * frac, 1),
        "cpu_ghz": m.cpu_ghz,
        "cpu_ram": m.cpu_ram_gb * 1000.0 * frac,
        "cuda_max_good": m.cuda_max_good,
        "driver_version": m.driver_version,
        "driver_vers": numeric_driver(m.driver_version),
        "compute_cap": m.compute_cap,
        "dlperf": dlperf,
        "total_flops": round(dlperf * 1.6, 2),
        "disk_bw": 2500.0,
        "disk_name": "Samsung SSD 990 PRO",
        "pci_gen": 4.0,
        "pcie_bw": m.pcie_bw,
        "mobo_name": "ROMED8-2T",
        "has_avx": 1,
        "inet_up": m.inet_up,
        "inet_down": m.inet_down,
        "inet_up_cost": m.inet_up_cost,
        "inet_down_cost": m.inet_down_cost,
        "internet_up_cost_per_tb": round(m.inet_up_cost * 1000, 4),
        "internet_down_cost_per_tb": round(m.inet_down_cost * 1000, 4),
        "storage_cost": m.storage_cost,
        "reliability": host.reliability,
        "reliability2": host.reliability,
        "verified": host.verified,
        "verification": "verified" if host.verified else "unverified",
        "external": False,
        "direct_port_count": m.direct_port_count,
        "geolocation": host.geolocation,
        "geolocode": 0,
        "datacenter": host.hosting_type == 1,
        "hosting_type": host.hosting_type,
        "static_ip": host.hosting_type == 1,
        "public_ipaddr": m.public_ip,
        "ubuntu_version": "22.04",
        "os_version": "22.04",
        "vms_enabled": False,
        "cluster_id": None,
        "duration": m.max_days * 86400.0,
    }


def offer_row(
    market: Market,
    ask_id: int,
    m: Machine,
    n: int,
    min_bid: float,
    offer_type: str,
    storage_gb: float,
    now: float,
) -> dict[str, Any]:
    host = market.hosts[m.host_id]
    bid = offer_type == "bid"
    dph_base = round(m.dph_per_gpu * n, 4)
    storage_hourly = storage_gb * m.storage_cost / HOURS_PER_MONTH
    compute = min_bid if bid else dph_base
    dph_total = round(compute + storage_hourly, 6)
    row = machine_fields(m, host, n)
    row.update(
        {
            "id": ask_id,
            "ask_contract_id": ask_id,
            "bundle_id": ask_id,
            "bundled_results": 0,
            "dph_base": dph_base,
            "dph_total": dph_total,
            "discounted_dph_total": round(dph_total * 0.8, 6) if offer_type == "reserved" else dph_total,
            "min_bid": min_bid,
            "is_bid": bid,
            "storage_total_cost": round(storage_hourly, 6),
            "dlperf_per_dphtotal": round(row["dlperf"] / dph_total, 4) if dph_total else 0.0,
            "flops_per_dphtotal": round(row["total_flops"] / dph_total, 4) if dph_total else 0.0,
            "score": round(row["dlperf"] / dph_total * host.reliability, 4) if dph_total else 0.0,
            "rentable": True,
            "rented": False,
            "disk_space": m.disk_space,
            "start_date": None,
            "end_date": now + m.max_days * 86400.0,
            "time_remaining": "",
            "time_remaining_isbid": "",
            "webpage": None,
            "logo": "/static/logos/vastai_small2.png",
            "credit_discount_max": 0.4,
            "avg_bandwidth": m.inet_down,
        }
    )
    return row


STATUS = {
    # phase -> (actual_status, cur_state when the instance wants to run)
    Phase.loading: ("loading", "running"),
    Phase.running: ("running", "running"),
    Phase.scheduling: ("stopped", "stopped"),
    Phase.stopped: ("stopped", "stopped"),
    Phase.offline: ("offline", "running"),
}


def instance_row(market: Market, inst: Instance, now: float, ghost: bool = False) -> dict[str, Any]:
    m = market.machines[inst.machine_id]
    host = market.hosts[m.host_id]
    n = len(inst.gpu_ids)
    actual, cur = STATUS[inst.phase]
    intended = inst.intended
    msg = inst.status_msg
    if inst.phase == Phase.scheduling and inst.start_date is None:
        actual = "created"  # never ran yet: waiting for its first GPUs
    if ghost:
        actual, cur, intended, msg = "stopped", "stopped", "stopped", ""
    elif inst.intended == "stopped" and inst.phase == Phase.offline:
        cur = "stopped"
    if (
        market.quirks["cur_state_lies"]
        and not ghost
        and market.render_rng.random() < market.knobs.cur_state_lie_rate
    ):
        cur = "stopped" if cur == "running" else "running"
    storage_hourly = market.storage_rate(inst)
    running = inst.phase == Phase.running and not ghost
    row = machine_fields(m, host, n)
    row.update(
        {
            "id": inst.id,
            "label": inst.label,
            "image_uuid": inst.image,
            "image_args": [],
            "image_runtype": inst.runtype,
            "template_id": None,
            "template_name": None,
            "actual_status": actual,
            "intended_status": intended,
            "cur_state": cur,
            "next_state": intended,
            "status_msg": msg,
            "start_date": float(inst.start_date or inst.created_at),
            "end_date": inst.created_at + m.max_days * 86400.0,
            "uptime_mins": round((now - inst.phase_since) / 60.0, 2) if running else None,
            "dph_base": round(inst.price, 6),
            "dph_total": round(inst.price + storage_hourly, 6),
            "storage_total_cost": round(storage_hourly, 6),
            "is_bid": inst.is_bid,
            "min_bid": market.winning_bid(inst) if inst.is_bid and not ghost else inst.min_bid,
            "bid_price": inst.price if inst.is_bid else None,
            "disk_space": inst.disk_gb,
            "disk_usage": 0.0,
            "disk_util": 0.0,
            "gpu_util": 0.0 if running else None,
            "gpu_temp": 40.0 if running else None,
            "mem_usage": None,
            "mem_limit": None,
            "vmem_usage": None,
            "onstart": inst.onstart,
            "extra_env": [[k, v] for k, v in inst.env.items()],
            "ports": _ports(inst, m) if running else {},
            "ssh_host": m.public_ip if running else None,
            "ssh_port": inst.ports.get("22/tcp") if running else None,
            "ssh_idx": "0",
            "direct_port_start": min(inst.ports.values()),
            "direct_port_end": max(inst.ports.values()),
            "local_ipaddrs": "127.0.0.1",
            "jupyter_token": None,
            "volume_info": None,
            "rentable": False,
            "rented": True,
            "gpu_ids": list(inst.gpu_ids),
        }
    )
    return row


def _ports(inst: Instance, m: Machine) -> dict[str, list[dict[str, str]]]:
    return {key: [{"HostIp": m.public_ip, "HostPort": str(port)}] for key, port in inst.ports.items()}
