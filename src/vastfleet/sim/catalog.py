"""The seeded marketplace: which hosts and machines exist, with their GPUs, prices, reliability and places.

`build_market(seed, hosts)` is a pure function: the same seed and host count give the same market, field for
field. It draws from the GPU catalogue of `vastfleet.spec.gpus`. Never mutates anything after building.
"""

from __future__ import annotations

import random

from vastfleet.sim.entities import Host, Machine
from vastfleet.spec.gpus import GPU_MODELS, GpuModel

# The models a market must offer several times, so a scheduler always has a choice among them.
CORE_MODELS = ("RTX 4090", "RTX 3090", "A100 SXM4", "H100 SXM", "RTX A6000", "L40S", "RTX 5090", "A40")

_WEIGHTS = {
    "RTX 4090": 8,
    "RTX 3090": 6,
    "RTX 3060": 2,
    "RTX 3080": 2,
    "RTX 4080": 2,
    "RTX 4070": 1,
    "RTX 5090": 3,
    "RTX A4000": 2,
    "RTX A5000": 2,
    "RTX A6000": 3,
    "A100 SXM4": 3,
    "A100 PCIE": 2,
    "H100 SXM": 3,
    "H100 PCIE": 2,
    "H200": 1,
    "L40S": 2,
    "L40": 1,
    "A40": 2,
    "Tesla V100": 1,
    "RTX 6000Ada": 1,
}

_DRIVERS = {12.2: "535.154.05", 12.4: "550.54.15", 12.6: "560.35.03", 12.8: "570.124.06"}

_PLACES = (
    "California, US",
    "Texas, US",
    "Virginia, US",
    "Quebec, CA",
    "Ontario, CA",
    "Bavaria, DE",
    "North Holland, NL",
    "Stockholm, SE",
    "Taipei, TW",
    "Tokyo, JP",
    "Mazovia, PL",
    "Sao Paulo, BR",
    "Hanoi, VN",
    "Guangdong, CN",
    "Helsinki, FI",
    "Ile-de-France, FR",
)


def compute_cap(name: str) -> int:
    if name.startswith("RTX 50") or name == "B200":
        return 1200 if name.startswith("RTX") else 1000
    if name.startswith(("RTX 40", "L4", "L40")) or name == "RTX 6000Ada":
        return 890
    if name.startswith(("H100", "H200")):
        return 900
    if name.startswith("A100"):
        return 800
    if name in ("Tesla T4", "Q RTX 8000"):
        return 750
    if name == "Tesla V100":
        return 700
    return 860


def numeric_driver(version: str) -> int:
    """535.86.05 -> 535086005, the way the vast client sends driver versions in queries."""
    parts = (version.split(".") + ["0", "0"])[:3]
    return int("".join(p.zfill(3) for p in parts))


def _model_for(index: int, rng: random.Random) -> GpuModel:
    by_name = {m.name: m for m in GPU_MODELS}
    if index < 2 * len(CORE_MODELS):
        return by_name[CORE_MODELS[index % len(CORE_MODELS)]]
    names = list(_WEIGHTS)
    return by_name[rng.choices(names, weights=[_WEIGHTS[n] for n in names])[0]]


def _gpu_count(model: GpuModel, rng: random.Random) -> int:
    if model.dph >= 1.0:
        return rng.choices((1, 2, 4, 8), weights=(1, 1, 3, 5))[0]
    return rng.choices((1, 2, 4, 8), weights=(4, 3, 3, 1))[0]


def build_market(seed: int, hosts: int) -> tuple[list[Host], list[Machine]]:
    """One machine per host, every figure drawn from `random.Random(seed)`."""
    rng = random.Random(seed)
    host_list: list[Host] = []
    machines: list[Machine] = []
    for i in range(hosts):
        verified = rng.random() < 0.8
        reliability = rng.uniform(0.95, 0.999) if verified else rng.uniform(0.80, 0.98)
        host = Host(
            id=10_001 + i * 7,
            reliability=round(reliability, 4),
            verified=verified,
            geolocation=rng.choice(_PLACES),
            hosting_type=1 if rng.random() < 0.3 else 0,
        )
        model = _model_for(i, rng)
        n = _gpu_count(model, rng)
        cudas = [c for c in _DRIVERS if c <= model.cuda_max]
        cuda = rng.choice(cudas)
        dph = round(model.dph * rng.uniform(0.75, 1.35), 4)
        machine = Machine(
            id=30_001 + i * 3,
            host_id=host.id,
            gpu_name=model.name,
            num_gpus=n,
            gpu_ram_gb=float(model.vram_gb),
            cuda_max_good=cuda,
            dlperf_per_gpu=round(model.dlperf * rng.uniform(0.85, 1.1), 2),
            dph_per_gpu=dph,
            min_bid_per_gpu=round(dph * rng.uniform(0.3, 0.6), 4),
            storage_cost=round(rng.uniform(0.05, 0.3), 3),
            inet_up=round(rng.uniform(100, 5000), 1),
            inet_down=round(rng.uniform(100, 5000), 1),
            inet_up_cost=round(rng.choice((0.0, rng.uniform(0.001, 0.02))), 4),
            inet_down_cost=round(rng.choice((0.0, rng.uniform(0.001, 0.02))), 4),
            disk_space=float(rng.choice((100, 250, 500, 1000, 2000))),
            cpu_cores=n * rng.choice((8, 12, 16, 32)),
            cpu_ram_gb=float(n * rng.choice((32, 64, 128))),
            driver_version=_DRIVERS[cuda],
            compute_cap=compute_cap(model.name),
            direct_port_count=rng.choices((0, 10, 50, 100, 500), weights=(2, 3, 3, 3, 1))[0],
            public_ip=f"198.51.{100 + i // 250}.{1 + i % 250}",
            pcie_bw=round(rng.uniform(10, 50), 1),
            cpu_ghz=round(rng.uniform(2.2, 4.5), 1),
            max_days=round(rng.uniform(7, 90), 1),
        )
        host_list.append(host)
        machines.append(machine)
    return host_list, machines
