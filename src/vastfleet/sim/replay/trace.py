"""Market traces in the JSON Lines market format, compiled onto a tick grid for the replay and the optimum.

Events (one JSON object a line; `t` in seconds from the trace start):
  {"type": "meta", "tick": 195, "name": "..."}                      optional, first line
  {"t": 0, "type": "offer", "id": "o1", "host": 12, "gpu_name": "RTX 4090", "num_gpus": 1, "dph_total": 0.45,
   "min_bid": 0.18, "reliability": 0.991, "dlperf": 80.1, "capacity": 1, "storage_dph": 0.0, "inet_down_cost": 0.0}
  {"t": ..., "type": "price", "id": ..., "dph_total": ..., "min_bid": ...}   either price may be left out
  {"t": ..., "type": "bid", "id": ..., "price": 0.25}   a competing bid (replaces the offer's current one)
  {"t": ..., "type": "bid_end", "id": ...}
  {"t": ..., "type": "offline" | "online", "host": ...}
  {"t": ..., "type": "gone" | "back", "id": ...}        rented away on demand by someone else
The lowest bid that runs on an offer is max(min_bid, competing bid). Event times must sit on the tick grid
(the meta tick, else the gcd of all event times). Loading never touches the network; bad lines raise BadInput.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np

from vastfleet.errors import BadInput

# field -> (lowest value, whether the lowest is allowed, whole numbers only); reliability is also at most 1
_LIMITS: dict[str, tuple[float, bool, bool]] = {
    "dph_total": (0.0, False, False), "min_bid": (0.0, True, False), "dlperf": (0.0, False, False),
    "price": (0.0, True, False), "reliability": (0.0, True, False), "storage_dph": (0.0, True, False),
    "inet_down_cost": (0.0, True, False), "gpu_ram_gb": (0.0, True, False), "num_gpus": (1, True, True),
    "capacity": (1, True, True), "host": (0, True, True),
}
_OFFER_DEFAULTS: dict[str, Any] = {"num_gpus": 1, "reliability": 0.99, "capacity": 1, "storage_dph": 0.0,
                                   "inet_down_cost": 0.0, "gpu_ram_gb": 0.0}


@dataclass
class Market:
    """A trace on its tick grid: static per-offer attributes and [tick, offer] state arrays."""

    name: str
    tick: int  # seconds
    offer_keys: list[str]
    host: np.ndarray
    gpu: np.ndarray  # object
    num_gpus: np.ndarray
    dlperf: np.ndarray
    reliability: np.ndarray
    capacity: np.ndarray
    storage_dph: np.ndarray
    inet_down_cost: np.ndarray
    listed_from: np.ndarray  # first tick the offer exists
    dph: np.ndarray  # [T, n]
    floor: np.ndarray  # [T, n] min_bid
    comp: np.ndarray  # [T, n] competing bid (0 = none)
    online: np.ndarray  # [T, n] bool
    gone: np.ndarray  # [T, n] bool

    @property
    def n_ticks(self) -> int:
        return int(self.dph.shape[0])

    @property
    def eff(self) -> np.ndarray:
        return np.maximum(self.floor, self.comp)

    def listed(self, k: int) -> np.ndarray:
        return self.listed_from <= k


def parse_lines(lines: list[str], source: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    meta: dict[str, Any] = {}
    events: list[dict[str, Any]] = []
    for no, raw in enumerate(lines, 1):
        raw = raw.strip()
        if not raw:
            continue
        try:
            ev = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise BadInput(f"{source}:{no}: not JSON ({exc.msg})") from None
        if not isinstance(ev, dict) or "type" not in ev:
            raise BadInput(f"{source}:{no}: each line must be an object with a 'type'")
        if ev["type"] == "meta":
            meta = ev
            continue
        if ev["type"] not in {"offer", "price", "bid", "bid_end", "offline", "online", "gone", "back"}:
            raise BadInput(f"{source}:{no}: unknown event type {ev['type']!r}")
        if not isinstance(ev.get("t"), (int, float)) or ev["t"] < 0:
            raise BadInput(f"{source}:{no}: 't' must be a number of seconds >= 0")
        key = "host" if ev["type"] in {"offline", "online"} else "id"
        if key not in ev:
            raise BadInput(f"{source}:{no}: a {ev['type']!r} event needs {key!r}")
        if ev["type"] == "bid" and "price" not in ev:
            raise BadInput(f"{source}:{no}: a 'bid' event needs 'price'")
        if ev["type"] == "price" and "dph_total" not in ev and "min_bid" not in ev:
            raise BadInput(f"{source}:{no}: a 'price' event needs 'dph_total' or 'min_bid'")
        _check_numbers(ev, f"{source}:{no}")
        ev["_no"] = no
        events.append(ev)
    return meta, events


def _check_numbers(ev: dict[str, Any], where: str) -> None:
    for name, value in ev.items():
        if name not in _LIMITS:
            continue
        lo, inclusive, whole = _LIMITS[name]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (value >= lo if inclusive else value > lo) and not (whole and not float(value).is_integer())
        if name == "reliability":
            ok = ok and value <= 1.0
        if not ok:
            want = ("a number from 0 to 1" if name == "reliability" else
                    f"a whole number >= {lo:g}" if whole else f"a number {'>=' if inclusive else '>'} {lo:g}")
            raise BadInput(f"{where}: {name!r} must be {want}, not {value!r}")


def compile_market(meta: dict[str, Any], events: list[dict[str, Any]], source: str = "trace") -> Market:
    offers = [e for e in events if e["type"] == "offer"]
    if not offers:
        raise BadInput(f"{source}: the trace lists no offers")
    times = [round(e["t"]) for e in events]
    tick = int(meta.get("tick") or reduce(math.gcd, [t for t in times if t] or [60]))
    if tick <= 0 or any(t % tick for t in times):
        raise BadInput(f"{source}: event times must be multiples of the tick ({tick} s)")
    horizon = int(meta.get("horizon", max(times) + tick))
    T = horizon // tick + 1
    keys: list[str] = []
    pos: dict[str, int] = {}
    for e in offers:
        k = str(e["id"])
        if k in pos:
            raise BadInput(f"{source}:{e['_no']}: offer {k!r} listed twice")
        for field in ("host", "gpu_name", "dph_total", "min_bid", "dlperf"):
            if field not in e:
                raise BadInput(f"{source}:{e['_no']}: offer {k!r} lacks {field!r}")
        pos[k] = len(keys)
        keys.append(k)
    n = len(keys)

    def attr(name: str, dtype: Any = float) -> np.ndarray:
        return np.array([e.get(name, _OFFER_DEFAULTS.get(name)) for e in offers], dtype=dtype)

    host = attr("host", np.int64)
    by_host: dict[int, list[int]] = {}
    for col, h in enumerate(host):
        by_host.setdefault(int(h), []).append(col)
    # build change lists per tick, then forward-fill
    dph = np.full((T, n), np.nan)
    floor = np.full((T, n), np.nan)
    comp = np.full((T, n), np.nan)
    online = np.full((T, n), np.nan)
    gone = np.full((T, n), np.nan)
    listed = np.full(n, T, dtype=np.int64)
    for e in sorted(events, key=lambda e: (e["t"], e["_no"])):
        k = round(e["t"]) // tick
        typ = e["type"]
        if typ in {"offline", "online"}:
            cols = by_host.get(int(e["host"]), [])
            online[k, cols] = 1.0 if typ == "online" else 0.0
            continue
        found = pos.get(str(e["id"]))
        if found is None:
            raise BadInput(f"{source}:{e['_no']}: event for unknown offer {e['id']!r}")
        i: int = found
        if typ == "offer":
            listed[i] = k
            dph[k, i], floor[k, i] = float(e["dph_total"]), float(e["min_bid"])
            comp[k, i], gone[k, i] = 0.0, 0.0
            if np.isnan(online[k, i]):
                online[k, i] = 1.0
        elif typ == "price":
            if "dph_total" in e:
                dph[k, i] = float(e["dph_total"])
            if "min_bid" in e:
                floor[k, i] = float(e["min_bid"])
        elif typ == "bid":
            comp[k, i] = float(e["price"])
        elif typ == "bid_end":
            comp[k, i] = 0.0
        else:
            gone[k, i] = 1.0 if typ == "gone" else 0.0
    out = []
    for arr, first in ((dph, 0.0), (floor, 0.0), (comp, 0.0), (online, 1.0), (gone, 0.0)):
        filled = arr.copy()
        if np.isnan(filled[0]).any():
            filled[0] = np.where(np.isnan(filled[0]), first, filled[0])
        idx = np.where(~np.isnan(filled), np.arange(T)[:, None], 0)
        np.maximum.accumulate(idx, axis=0, out=idx)
        out.append(filled[idx, np.arange(n)[None, :]])
    return Market(
        name=str(meta.get("name", source)), tick=tick, offer_keys=keys, host=host, gpu=attr("gpu_name", object),
        num_gpus=attr("num_gpus", np.int64), dlperf=attr("dlperf"), reliability=attr("reliability"),
        capacity=attr("capacity", np.int64), storage_dph=attr("storage_dph"),
        inet_down_cost=attr("inet_down_cost"), listed_from=listed, dph=out[0], floor=out[1], comp=out[2],
        online=out[3] > 0.5, gone=out[4] > 0.5,
    )


def load_market(path: str | Path) -> Market:
    file = Path(path)
    try:
        lines = file.read_text().splitlines()
    except OSError as exc:
        raise BadInput(f"cannot read market trace {file}: {exc.strerror}") from None
    meta, events = parse_lines(lines, str(file))
    return compile_market(meta, events, file.name)


def write_events(path: str | Path, meta: dict[str, Any], events: list[dict[str, Any]]) -> None:
    with open(path, "w") as fh:
        fh.write(json.dumps({"type": "meta", **meta}, sort_keys=True) + "\n")
        fh.writelines(json.dumps(ev, sort_keys=True) + "\n" for ev in events)
