"""Our own rentals as placement must see them, so that the fleet never outbids itself.

On vast a higher bid on a GPU pauses the lower one at once, and on demand beats any bid; the offers a search
returns already count GPUs our bids hold as rentable (priced just above our bid). A placement that takes
them pauses one of our own jobs, whose recovery then bids higher still: a bid war against ourselves. The
rules, per machine (offers on one machine share its GPUs):

* a bid offer whose `min_bid` per GPU is above the lowest per-GPU bid of our rentals holding GPUs there
  would displace one of them (the host hands out its cheapest GPUs first: free ones, then the lowest bids);
* an on-demand offer on a machine where our bids hold GPUs may take theirs (the host picks which);
* a machine with a create of ours in flight, or placed on earlier in this pass, gets no other placement
  this pass: its offers change once one of them is rented, and its GPUs are being handed out.

When instance rows name their GPU ids (`Instance.gpu_ids`), a paused instance's own GPU is known exactly
(`holds_our_gpu`). Pure: plain data in, masks out; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vastfleet.scheduler.policy.types import OfferTable

_TOL = 1e-9  # relative: an offer priced at exactly our bid takes a free GPU, not ours


@dataclass(frozen=True)
class Rental:
    """One live rental of ours as the listing shows it."""

    instance_id: int
    machine_id: int
    num_gpus: int
    bid: float | None  # $/h of the whole rental; None: on demand
    holding: bool  # holds its GPUs now (loading or running); False: paused or waiting for them
    gpu_ids: tuple[int, ...] | None = None

    @property
    def bid_per_gpu(self) -> float | None:
        return None if self.bid is None else self.bid / max(self.num_gpus, 1)


@dataclass(frozen=True)
class Holdings:
    """The fleet's rentals, and the machines of attempts the listing does not show yet (creates in flight, a
    listing that lags): no other placement goes there this pass."""

    rentals: tuple[Rental, ...] = ()
    in_flight: frozenset[int] = frozenset()  # machine ids

    def lowest_bid_per_gpu(self, machine_id: int, *, excluding: int | None = None) -> float:
        """The lowest per-GPU bid of our rentals holding GPUs on the machine (inf: none)."""
        bids = [r.bid_per_gpu for r in self.rentals if r.machine_id == machine_id and r.holding
                and r.bid_per_gpu is not None and r.instance_id != excluding]
        return min(bids, default=float("inf"))

    def holds_our_gpu(self, paused: Rental, winning_bid: float | None) -> bool:
        """Would getting `paused` its GPUs back outbid another rental of ours? Exact by GPU ids when the
        listing gives them; else by price: the bid it needs per GPU is above one of ours holding there."""
        others = [r for r in self.rentals if r.machine_id == paused.machine_id and r.holding
                  and r.instance_id != paused.instance_id]
        if not others:
            return False
        if paused.gpu_ids is not None and all(r.gpu_ids is not None for r in others):
            mine = set(paused.gpu_ids)
            return any(mine & set(r.gpu_ids or ()) for r in others)
        if winning_bid is None:
            return True  # cannot tell: assume the worst
        need = winning_bid / max(paused.num_gpus, 1)
        return need > self.lowest_bid_per_gpu(paused.machine_id, excluding=paused.instance_id) * (1.0 + _TOL)


@dataclass
class FleetGuard:
    """Per pass, over one offer table: which offers (as a bid, or on demand) would take our own GPUs.
    `take(i, bid)` records a placement of this pass; the masks follow."""

    table: OfferTable
    holdings: Holdings = field(default_factory=Holdings)

    def __post_init__(self) -> None:
        t = self.table
        assert t.machine is not None
        n = len(t)
        self.no_bid = np.zeros(n, dtype=bool)
        self.no_od = np.zeros(n, dtype=bool)
        self._order: np.ndarray | None = None  # row numbers by machine id, and those machine ids
        self._sorted = np.zeros(0, dtype=np.int64)
        self._per_gpu = t.min_bid / np.maximum(np.asarray(t.num_gpus, dtype=float), 1.0)
        if n == 0:
            return
        on_table = set(np.unique(t.machine).tolist())
        for m in {r.machine_id for r in self.holdings.rentals} & on_table:
            self._guard(m)
        for m in self.holdings.in_flight & on_table:
            self._close(m)

    def rows(self, machine_id: int) -> np.ndarray:
        if self._order is None:
            assert self.table.machine is not None
            self._order = np.argsort(self.table.machine, kind="stable")
            self._sorted = self.table.machine[self._order]
        lo = int(np.searchsorted(self._sorted, machine_id, side="left"))
        hi = int(np.searchsorted(self._sorted, machine_id, side="right"))
        return self._order[lo:hi]

    def _guard(self, machine_id: int) -> None:
        rows = self.rows(machine_id)
        low = self.holdings.lowest_bid_per_gpu(machine_id)
        self.no_bid[rows] |= self._per_gpu[rows] > low * (1.0 + _TOL)
        if np.isfinite(low):  # our bids hold GPUs here: on demand could take them
            self.no_od[rows] = True

    def _close(self, machine_id: int) -> None:
        rows = self.rows(machine_id)
        self.no_bid[rows] = True
        self.no_od[rows] = True

    def take(self, i: int) -> None:
        """A placement of this pass on row i: its machine gets no other one this pass."""
        assert self.table.machine is not None
        self._close(int(self.table.machine[i]))

    def blocked(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(no bid, no on demand) masks for the rows `idx`."""
        return self.no_bid[idx], self.no_od[idx]


@dataclass
class FleetBudget:
    """What new rentals may still add this pass under the fleet's caps (the live loop fills it from its
    spend ledger and the account's balance): `per_hour` $/h on top of what runs now, `total` $ in the first
    hour of every new rental together. Each placement spends from it; a job that does not fit waits, and
    `why` says which cap binds. Running work is never stopped by it."""

    per_hour: float = float("inf")
    total: float = float("inf")
    why: str = ""

    def fits(self, rate: float) -> bool:
        return rate <= self.per_hour * (1 + 1e-9) and rate <= self.total * (1 + 1e-9)

    def spend(self, rate: float) -> None:
        self.per_hour -= rate
        self.total -= rate

