"""The request gate of the simulated API: injected faults, rate limits and 5xx bursts, and a request log.

Before a vast route runs, `Gate.check` may answer instead: a fault queued by a test (`POST /sim/v1/faults`:
the next N matching calls get status S, or are held `delay` seconds first: a slow answer, which a client
with a shorter timeout never sees while the simulator still acts on the call, as vast's API does), a 429 when the `rate_limits` quirk is on and the same endpoint was
called again within `rate_limit_interval`, or a random 5xx when `error_bursts` is on. Every call is logged
(method, route, status) so tests can count the client's retries. Holds no market state.
"""

from __future__ import annotations

import random
import threading
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from vastfleet.sim.model import Market


@dataclass
class Fault:
    status: int
    remaining: int
    path: str | None  # a prefix of the request path; None = any vast route
    method: str | None
    text_body: bool  # answer text/plain instead of JSON (vast's 429s are sometimes text)
    delay: float = 0.0  # hold the call this long before answering (status 0: then serve it as usual)


@dataclass(frozen=True)
class Hold:
    """What the gate says about one call: wait `delay` seconds, then answer `status` (0: serve the call)."""

    delay: float
    status: int = 0
    body: Any = None
    as_text: bool = False


class Gate:
    def __init__(self, market: Market) -> None:
        self.market = market
        self.lock = threading.Lock()
        self.faults: list[Fault] = []
        self.last_call: dict[tuple[str, str], float] = {}
        self.log: deque[dict[str, Any]] = deque(maxlen=5000)
        self.counts: Counter[str] = Counter()
        self.rng = random.Random(market.seed * 31 + 7)  # apart from the market's events, for determinism

    def add_fault(
        self,
        status: int,
        count: int = 1,
        path: str | None = None,
        method: str | None = None,
        text_body: bool = False,
        delay: float = 0.0,
    ) -> None:
        with self.lock:
            self.faults.append(
                Fault(int(status), int(count), path, method.upper() if method else None, text_body,
                      max(0.0, float(delay)))
            )

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()
            self.last_call.clear()

    def check(self, method: str, path: str, route: str, caller: str) -> Hold | tuple[int, Any, bool] | None:
        """None to go on, (status, body, as_text) to answer instead, or a `Hold`: wait, then answer or go on."""
        with self.lock:
            for fault in self.faults:
                if (
                    fault.remaining > 0
                    and (fault.path is None or path.startswith(fault.path))
                    and (fault.method is None or fault.method == method)
                ):
                    fault.remaining -= 1
                    self.faults = [f for f in self.faults if f.remaining > 0]
                    if fault.delay > 0:
                        body = _fault_body(fault.status) if fault.status else None
                        return Hold(fault.delay, fault.status, body, fault.text_body)
                    return fault.status, _fault_body(fault.status), fault.text_body
            quirks, knobs = self.market.quirks, self.market.knobs
            now = self.market.clock()
            if quirks["rate_limits"]:
                key = (caller, f"{method} {route}")
                last = self.last_call.get(key)
                self.last_call[key] = now
                if last is not None and now - last < knobs.rate_limit_interval:
                    return 429, _fault_body(429), False
            if quirks["error_bursts"] and self.rng.random() < knobs.error_rate:
                # a burst: this call and the next few fail alike (what trips a client's three retries)
                status = self.rng.choice((500, 502, 503))
                extra = self.rng.randint(0, 3)
                if extra:
                    self.faults.append(Fault(status, extra, None, None, False))
                return status, _fault_body(status), False
        return None

    def record(self, method: str, path: str, route: str, status: int) -> None:
        with self.lock:
            self.log.append(
                {"method": method, "path": path, "route": route, "status": status, "at": self.market.clock()}
            )
            self.counts[f"{method} {route}"] += 1

    def requests(self) -> dict[str, Any]:
        with self.lock:
            return {"counts": dict(self.counts), "log": list(self.log)}


def _fault_body(status: int) -> dict[str, Any]:
    if status == 429:
        return {
            "success": False,
            "error": "rate_limited",
            "msg": "API requests too frequent: endpoint threshold exceeded, slow down.",
        }
    if status >= 500:
        return {"success": False, "error": "server_error", "msg": f"Upstream error {status}, try again."}
    return {"success": False, "error": "injected_fault", "msg": f"Injected fault {status}."}
