"""The sweep's spend, from the marketplace listing the driver reads each pass (its own accrual, durable in
Redis), so the budget gate sees what the sweep's instances bill, across restarts of the control plane.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vastfleet.sweeps.models import Sweep, Trial
from vastfleet.sweeps.store import SweepStore

if TYPE_CHECKING:
    from vastfleet.sweeps.driver import Observed


def accrue(sweeps: SweepStore, sweep: Sweep, trials: dict[int, Trial], seen: Observed) -> None:
    """The sweep's spend from the listing: each instance of its trials bills its $/h from its last accrual
    (first seen: its start when the listing says, else the last pass), so a restart loses no billed time;
    one that left the listing bills its last rate up to this pass (it went some time in between: erring
    high keeps the budget safe)."""
    billed = sweeps.billed(sweep.id)
    listed: set[int] = set()
    for t in trials.values():
        for inst in seen.instances.get(t.job_id or "", ()):
            listed.add(inst.id)
            status = (inst.actual_status or "").lower()
            rate = float(inst.dph_total or 0.0) if status in ("running", "loading", "created") or not status \
                else max(0.0, float(inst.dph_total or 0.0) - float(inst.bid_price or inst.dph_total or 0.0))
            since = billed.get(inst.id, {}).get("until")
            if since is None:
                start = float(inst.start_date or 0.0)
                sane = seen.now - 7 * 86400.0 < start <= seen.now
                since = start if sane else min(seen.previous or seen.now, seen.now)
            hours = max(0.0, seen.now - float(since)) / 3600.0
            sweeps.accrue(sweep.id, inst.id, t.job_id or "", t.number, seen.now, rate * hours, rate)
    for iid, pos in billed.items():
        if iid not in listed and not pos.get("gone"):
            hours = max(0.0, seen.now - float(pos.get("until", seen.now))) / 3600.0
            sweeps.accrue(sweep.id, iid, str(pos.get("job", "")), int(pos.get("number", 0)), seen.now,
                          float(pos.get("rate", 0.0)) * hours, 0.0, gone=True)
