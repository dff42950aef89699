"""Converters from the public spot traces (SkyNomad artifact, Apache-2.0) to the market format.

Each zone becomes one offer with room for many rentals (capacity 64), always online. Spot unavailability
becomes a competing bid at the on-demand price (bids below it are paused, on demand stays available);
per-tick spot prices become min_bid price events; the on-demand price is constant.
- AWS V100 (p3.2xlarge, 1 GPU): CSVs `date,availability` with 1 = AVAILABLE, 195 s ticks, and
  `v100_spot_prices.json`; on demand $3.06/h.
- GCP H100 `full.json`: `data` uses 1 = UNAVAILABLE (the simulator's preempted convention), 600 s ticks;
  prices are for a3-highgpu-8g, i.e. 8 x H100, so each offer is 8 GPUs.
The availability fractions are asserted against the figures in the data's README so that an inverted
0/1 convention cannot slip through.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from vastfleet.errors import BadInput

V100_OD = 3.06
V100_DLPERF = 20.0  # catalogue figure for Tesla V100 (work is normalised by it, so only ratios matter)
H100X8_DLPERF = 8 * 135.0
# fraction of ticks available per zone, as the traces' README and our check of the raw files state
V100_AVAIL = {"us-east-1a": 0.1667, "us-east-1c": 0.4665, "us-east-1d": 0.4473, "us-east-1f": 0.5912,
              "us-east-2a": 0.7593, "us-east-2b": 0.6822, "us-west-2a": 0.8831, "us-west-2b": 0.9050,
              "us-west-2c": 0.8913}
H100_MEAN_AVAIL = 0.767  # README: 76.7% over the full probe set (mean of zones here: 0.762)


def _zone_events(i: int, zone: str, avail: list[int], prices: list[float], od: float, tick: int, gpu: str,
                 num_gpus: int, dlperf: float) -> list[dict[str, Any]]:
    oid = f"{zone}"
    ev: list[dict[str, Any]] = [{"t": 0, "type": "offer", "id": oid, "host": i, "gpu_name": gpu,
                                 "num_gpus": num_gpus, "dph_total": od, "min_bid": prices[0],
                                 "reliability": 0.99, "dlperf": dlperf, "capacity": 64}]
    if not avail[0]:
        ev.append({"t": 0, "type": "bid", "id": oid, "price": od})
    for k in range(1, len(avail)):
        t = k * tick
        if prices[k] != prices[k - 1]:
            ev.append({"t": t, "type": "price", "id": oid, "min_bid": prices[k]})
        if avail[k] != avail[k - 1]:
            ev.append({"t": t, "type": "bid_end", "id": oid} if avail[k] else
                      {"t": t, "type": "bid", "id": oid, "price": od})
    return ev


def convert_v100(folder: Path, zones: list[str] | None = None,
                 ticks: int | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    avail_dir = folder / "v100_1node_2023-02-15_availability"
    prices_all = json.loads((folder / "v100_spot_prices.json").read_text())
    files = sorted(avail_dir.glob("*_v100_1.csv"))
    if not files:
        raise BadInput(f"{avail_dir}: no *_v100_1.csv files")
    events: list[dict[str, Any]] = []
    for i, f in enumerate(files):
        zone = f.name.removesuffix("_v100_1.csv")
        if zones and zone not in zones:
            continue
        with f.open() as fh:
            avail = [int(float(r["availability"])) for r in csv.DictReader(fh)]  # 1 = available
        prices = [float(x) for x in prices_all[f"{zone}_v100_1"]]
        if len(prices) != len(avail):
            raise BadInput(f"{zone}: {len(avail)} availability ticks but {len(prices)} prices")
        frac = sum(avail) / len(avail)
        if zone in V100_AVAIL and abs(frac - V100_AVAIL[zone]) > 0.002:
            raise BadInput(f"{zone}: availability {frac:.4f} != {V100_AVAIL[zone]} (0/1 convention?)")
        n = ticks or len(avail)
        events += _zone_events(i, zone, avail[:n], prices[:n], V100_OD, 195, "Tesla V100", 1, V100_DLPERF)
    n_ticks = ticks or 20158
    events.sort(key=lambda e: (e["t"], e["id"]))
    return {"tick": 195, "horizon": (n_ticks - 1) * 195, "name": "aws-v100-2023-02",
            "source": "skynomad-artifact (Apache-2.0), AWS p3.2xlarge spot, 1 = available"}, events


def convert_h100(folder: Path, zones: list[str] | None = None,
                 ticks: int | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    base = folder / "h100_16_gcp_2025-10_full"
    files = sorted(base.glob("*_h100_16/full.json"))
    if not files:
        raise BadInput(f"{base}: no */full.json files")
    events: list[dict[str, Any]] = []
    fracs = []
    length = 0
    for i, f in enumerate(files):
        zone = f.parent.name.removesuffix("_h100_16")
        d = json.loads(f.read_text())
        if int(d["metadata"]["gap_seconds"]) != 600:
            raise BadInput(f"{f}: expected 600 s ticks")
        avail = [0 if x else 1 for x in d["data"]]  # file: 1 = UNAVAILABLE; ours: 1 = available
        fracs.append(sum(avail) / len(avail))
        if zones and zone not in zones:
            continue
        od = round(float(d["metadata"]["price_info"]["on_demand_price"]), 4)
        prices = [round(float(x), 4) for x in d["prices"]]
        n = ticks or len(avail)
        length = n
        events += _zone_events(i, zone, avail[:n], prices[:n], od, 600, "H100 SXM", 8, H100X8_DLPERF)
    mean = sum(fracs) / len(fracs)
    if abs(mean - H100_MEAN_AVAIL) > 0.02:
        raise BadInput(f"H100 mean availability {mean:.3f} far from {H100_MEAN_AVAIL} (0/1 convention?)")
    events.sort(key=lambda e: (e["t"], e["id"]))
    return {"tick": 600, "horizon": (length - 1) * 600, "name": "gcp-h100x8-2025-10",
            "source": "skynomad-artifact (Apache-2.0), GCP a3-highgpu-8g prices (8 x H100), 1 = unavailable"}, events
