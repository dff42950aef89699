"""Billing of the simulated account, per instance and per state.

Compute is charged while an instance holds its GPUs (loading or running) at its compute rate (the bid, or the
on-demand price); storage is charged in every state until destroy (a stopped or paused instance still bills
its disk); bandwidth is charged per byte that a cloud copy moves, at the host's $/GB. The ledger only
records: the model tells it when a phase or a rate changes. Never reads a clock of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

COMPUTE_PHASES = ("loading", "running")
GB = 1e9  # vast bills bandwidth per decimal GB


@dataclass
class Account:
    instance_id: int
    label: str | None
    phase: str
    since: float
    compute_rate: float  # $/h while holding GPUs
    storage_rate: float  # $/h in every state
    opened_at: float
    closed_at: float | None = None
    compute: float = 0.0
    storage: float = 0.0
    bandwidth: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def settle(self, now: float) -> None:
        span = max(0.0, now - self.since)
        if self.phase in COMPUTE_PHASES:
            self.compute += self.compute_rate * span / 3600.0
        self.storage += self.storage_rate * span / 3600.0
        if span > 0:
            self.seconds[self.phase] = self.seconds.get(self.phase, 0.0) + span
        self.since = max(self.since, now)

    def as_dict(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "label": self.label,
            "phase": self.phase if self.closed_at is None else "destroyed",
            "compute_rate": self.compute_rate,
            "storage_rate": self.storage_rate,
            "compute": self.compute,
            "storage": self.storage,
            "bandwidth": self.bandwidth,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "total": self.compute + self.storage + self.bandwidth,
            "seconds": dict(self.seconds),
            "opened_at": self.opened_at,
            "closed_at": self.closed_at,
        }


class Ledger:
    def __init__(self, credit: float = 1000.0) -> None:
        self.credit = credit
        self.accounts: dict[int, Account] = {}

    def open(
        self,
        instance_id: int,
        label: str | None,
        phase: str,
        now: float,
        compute_rate: float,
        storage_rate: float,
    ) -> None:
        self.accounts[instance_id] = Account(instance_id, label, phase, now, compute_rate, storage_rate, now)

    def change(
        self,
        instance_id: int,
        now: float,
        *,
        phase: str | None = None,
        compute_rate: float | None = None,
        label: str | None = None,
    ) -> None:
        acct = self.accounts.get(instance_id)
        if acct is None or acct.closed_at is not None:
            return
        acct.settle(now)
        if phase is not None:
            acct.phase = phase
        if compute_rate is not None:
            acct.compute_rate = compute_rate
        if label is not None:
            acct.label = label

    def close(self, instance_id: int, now: float) -> None:
        acct = self.accounts.get(instance_id)
        if acct is None or acct.closed_at is not None:
            return
        acct.settle(now)
        acct.closed_at = now

    def bandwidth(self, instance_id: int, nbytes: int, cost_per_gb: float, upload: bool) -> float:
        acct = self.accounts[instance_id]
        charge = nbytes / GB * cost_per_gb
        acct.bandwidth += charge
        if upload:
            acct.bytes_up += nbytes
        else:
            acct.bytes_down += nbytes
        return charge

    def snapshot(self, now: float) -> dict[str, Any]:
        """Every account as of `now`, the open segments settled on copies (the ledger itself is unchanged)."""
        rows: dict[str, Any] = {}
        for iid, acct in sorted(self.accounts.items()):
            copy = Account(**{**acct.__dict__, "seconds": dict(acct.seconds)})
            if copy.closed_at is None:
                copy.settle(now)
            rows[str(iid)] = copy.as_dict()
        spent = sum(r["total"] for r in rows.values())
        return {
            "instances": rows,
            "compute": sum(r["compute"] for r in rows.values()),
            "storage": sum(r["storage"] for r in rows.values()),
            "bandwidth": sum(r["bandwidth"] for r in rows.values()),
            "total": spent,
            "credit": self.credit,
            "balance": self.credit - spent,
            "now": now,
        }

    def spent(self, now: float) -> float:
        return float(self.snapshot(now)["total"])
