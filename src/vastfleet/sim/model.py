"""The rules of the simulated marketplace: offers from free GPUs, renting, priorities, state changes.

`Market` owns the state (hosts, machines, asks, instances, competing claims) behind one lock, and the rules:
on-demand beats any bid, a higher bid (per GPU) beats a lower one, an incumbent keeps its GPUs on a tie; a
stopped instance holds no GPU (and may find it taken when started again: the Scheduling trap); a destroyed
instance is gone with its disk. Every phase change goes through `_set_phase`, which tells the ledger and the
process runner. Random market events live in `events.py`; the HTTP shapes in `fields.py`. Time comes from
the injected clock; never sleeps.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

from vastfleet.sim.catalog import build_market
from vastfleet.sim.entities import (
    HOURS_PER_MONTH,
    Claim,
    Host,
    Instance,
    Knobs,
    Machine,
    Phase,
    SimError,
    quirks_from,
)
from vastfleet.sim.ledger import Ledger
from vastfleet.sim.runner import NullRunner, Runner

Holder = Instance | Claim


def port_entries(env: dict[str, Any]) -> list[str]:
    """The docker `-p` entries of a create env (`{"-p 8081:8081": "1"}`) as `"8081/tcp"` keys."""
    out = []
    for key in env:
        if not key.startswith("-p "):
            continue
        spec = key[3:].strip()
        proto = "tcp"
        if "/" in spec:
            spec, proto = spec.split("/", 1)
        inner = spec.split(":")[-1]
        if inner.isdigit():
            out.append(f"{int(inner)}/{proto}")
    return out


class Market:
    def __init__(
        self,
        seed: int = 0,
        hosts: int = 40,
        *,
        clock: Callable[[], float] | None = None,
        runner: Runner | None = None,
        knobs: Knobs | None = None,
        quirks: dict[str, bool] | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self.seed = seed
        self.clock = clock or time.time
        self.runner: Runner = runner or NullRunner()
        self.knobs = knobs or Knobs()
        self.quirks = quirks_from(quirks)
        self.rng = random.Random(seed * 7919 + 17)  # market events
        self.render_rng = random.Random(seed * 104729 + 3)  # lies in rendered rows, apart from the events
        host_list, machine_list = build_market(seed, hosts)
        self.hosts: dict[int, Host] = {h.id: h for h in host_list}
        self.machines: dict[int, Machine] = {m.id: m for m in machine_list}
        self.ledger = Ledger(self.knobs.credit)
        self.instances: dict[int, Instance] = {}
        self.ghosts: dict[int, Instance] = {}
        self.claims: dict[int, Claim] = {}
        self.asks: dict[int, tuple[int, int]] = {}  # live ask id -> (machine id, gpu count)
        self.retired_asks: dict[int, tuple[int, int]] = {}
        self._ask_of: dict[tuple[int, int], int] = {}
        self._next_ask = 4_000_001
        self._next_instance = 20_000_001
        self._next_claim = 1
        self._seq = 0
        for m in machine_list:
            for n in self.bundle_sizes(m, m.num_gpus):
                self.ask_id(m.id, n)

    # --- asks and availability ------------------------------------------------------------------------

    @staticmethod
    def bundle_sizes(machine: Machine, free: int) -> list[int]:
        """The offers a machine lists for `free` usable GPUs: all of them, and 1/2/4-GPU slices."""
        if free <= 0:
            return []
        return sorted({free, *(s for s in (1, 2, 4) if s < free)})

    def ask_id(self, machine_id: int, n: int) -> int:
        key = (machine_id, n)
        if key not in self._ask_of:
            self._ask_of[key] = self._next_ask
            self.asks[self._next_ask] = key
            self._next_ask += 1
        return self._ask_of[key]

    def retire_asks(self, machine_id: int) -> None:
        """The machine's occupancy changed: its offers get new ids, the old ones answer no_such_ask."""
        for key in [k for k in self._ask_of if k[0] == machine_id]:
            ask = self._ask_of.pop(key)
            self.retired_asks[ask] = self.asks.pop(ask)

    def holders(self, machine_id: int) -> dict[int, Holder]:
        """GPU index -> who holds it now (instances loading/running, competing claims that won)."""
        out: dict[int, Holder] = {}
        for inst in self.instances.values():
            if inst.machine_id == machine_id and inst.holds_gpus:
                for g in inst.gpu_ids:
                    out[g] = inst
        for claim in self.claims.values():
            if claim.machine_id == machine_id and claim.holding:
                for g in claim.gpu_ids:
                    out[g] = claim
        return out

    @staticmethod
    def _ondemand(h: Holder) -> bool:
        return h.ondemand if isinstance(h, Claim) else not h.is_bid

    @staticmethod
    def _pg(h: Holder) -> float:
        return h.price_per_gpu if isinstance(h, Claim) else h.price_per_gpu()

    def usable(self, machine: Machine, bid: bool) -> tuple[list[int], dict[int, float]]:
        """GPUs an on-demand rental (free or held by bids) or a bid (not held on demand) could take, cheapest
        to take first, with the per-GPU price a bid must beat for each."""
        held = self.holders(machine.id)
        cost: dict[int, float] = {}
        for g in range(machine.num_gpus):
            h = held.get(g)
            if h is None:
                cost[g] = 0.0
            elif not self._ondemand(h):
                cost[g] = self._pg(h)
        order = sorted(cost, key=lambda g: (cost[g], g))
        if not bid:
            order = [g for g in order if g not in held] + [g for g in order if g in held]
        return order, cost

    def offer_terms(self, machine: Machine, n: int, bid: bool) -> tuple[bool, tuple[int, ...], float]:
        """(available, gpu ids it would get, min_bid for the whole bundle)."""
        order, cost = self.usable(machine, bid)
        if len(order) < n:
            return False, (), round(machine.min_bid_per_gpu * n, 4)
        gpus = tuple(sorted(order[:n]))
        beat = max((cost[g] + 0.001 for g in gpus if cost[g] > 0), default=0.0)
        return True, gpus, round(max(machine.min_bid_per_gpu, beat) * n, 4)

    def open_offers(self, bid: bool) -> list[tuple[int, Machine, int, float]]:
        """(ask id, machine, gpu count, min_bid) of every bundle rentable now for this kind of rental."""
        out = []
        for m in self.machines.values():
            if not self.hosts[m.host_id].online:
                continue
            order, _ = self.usable(m, bid)
            for n in self.bundle_sizes(m, len(order)):
                ok, _, min_bid = self.offer_terms(m, n, bid)
                if ok:
                    out.append((self.ask_id(m.id, n), m, n, min_bid))
        return out

    # --- phase changes: the one place that talks to the ledger and the runner ---------------------------

    def storage_rate(self, inst: Instance) -> float:
        return inst.disk_gb * self.machines[inst.machine_id].storage_cost / HOURS_PER_MONTH

    def set_phase(self, inst: Instance, phase: Phase, msg: str = "") -> None:
        now = self.clock()
        was = inst.phase
        if was == phase:
            inst.status_msg = msg or inst.status_msg
            return
        if inst.holds_gpus and phase not in (Phase.loading, Phase.running):
            self.runner.kill(inst.id)
        inst.phase = phase
        inst.phase_since = now
        inst.status_msg = msg
        self.ledger.change(inst.id, now, phase=phase.value)
        if phase == Phase.loading:
            inst.boot_at = now + self.knobs.boot_delay
            if self.knobs.boot_delay <= 0:
                self.set_phase(inst, Phase.running, "success, running")
        elif phase == Phase.running:
            inst.boot_at = None
            inst.zombie_at = None
            if inst.start_date is None:
                inst.start_date = now
            inst.starts += 1
            self.runner.start(inst, self.machines[inst.machine_id])

    def resolve(self, machine_id: int) -> None:
        """Give each GPU of a machine to the strongest claimant: on demand, then the higher bid per GPU, the
        incumbent on a tie, then the elder. Losers are paused at once (processes SIGKILLed)."""
        machine = self.machines[machine_id]
        before = {g: id(h) for g, h in self.holders(machine_id).items()}
        online = self.hosts[machine.host_id].online
        wanting: list[Holder] = [
            i
            for i in self.instances.values()
            if i.machine_id == machine_id
            and i.intended == "running"
            and i.phase in (Phase.loading, Phase.running, Phase.scheduling)
        ]
        wanting += [c for c in self.claims.values() if c.machine_id == machine_id]

        def rank(h: Holder) -> tuple[int, float, int, int]:
            holding = h.holding if isinstance(h, Claim) else h.holds_gpus
            return (0 if self._ondemand(h) else 1, -round(self._pg(h), 6), 0 if holding else 1, h.seq)

        taken: set[int] = set()
        now = self.clock()
        for h in sorted(wanting, key=rank):
            # a bid under the host's floor never runs, even on idle GPUs
            floor_ok = self._ondemand(h) or self._pg(h) >= machine.min_bid_per_gpu - 1e-9
            wins = online and floor_ok and not taken.intersection(h.gpu_ids)
            if wins:
                taken.update(h.gpu_ids)
            if isinstance(h, Claim):
                h.holding = wins
            elif wins and not h.holds_gpus:
                self.set_phase(h, Phase.loading, "Loading image")
            elif not wins:
                why = "bid below the minimum" if not floor_ok else "outbid" if h.is_bid else "GPU taken"
                msg = f"Scheduling: waiting for GPUs ({why})"
                if h.phase == Phase.scheduling:
                    h.status_msg = msg
                    continue
                self.set_phase(h, Phase.scheduling, msg)
                if self.quirks["zombie"] and h.is_bid:
                    h.zombie_at = now + self.knobs.zombie_delay
        after = {g: id(h) for g, h in self.holders(machine_id).items()}
        if before != after:
            self.retire_asks(machine_id)

    # --- the renter's operations --------------------------------------------------------------------------

    def get(self, instance_id: int) -> Instance:
        inst = self.instances.get(instance_id)
        if inst is None:
            raise SimError(404, "no_such_instance", f"Instance {instance_id} not found.")
        return inst

    def create(self, ask_id: int, body: dict[str, Any]) -> Instance:
        raced = False
        key = self.asks.get(ask_id)
        if key is None and self.quirks["offer_race"] and ask_id in self.retired_asks:
            key, raced = self.retired_asks[ask_id], True
        if key is None:
            raise SimError(404, "no_such_ask", f"Offer {ask_id} is no longer available.")
        machine = self.machines[key[0]]
        n = key[1]
        if not self.hosts[machine.host_id].online:
            raise SimError(404, "no_such_ask", f"Offer {ask_id} is no longer available.")
        price = body.get("price")
        is_bid = price is not None
        ok, gpus, min_bid = self.offer_terms(machine, n, is_bid)
        if not ok:
            if not raced:
                raise SimError(404, "no_such_ask", f"Offer {ask_id} is no longer available.")
            gpus = tuple(range(n))  # the other buyer got these GPUs: ours will wait in scheduling
        image = body.get("image")
        if not image and not body.get("template_hash_id"):
            raise SimError(400, "invalid_args", "An image (or a template) is required.")
        try:
            disk = float(body.get("disk") or 10.0)
            compute = float(price) if price is not None else round(machine.dph_per_gpu * n, 4)
        except (TypeError, ValueError) as exc:
            raise SimError(400, "invalid_args", f"Bad number in request: {exc}") from None
        if disk <= 0 or disk > machine.disk_space:
            raise SimError(400, "invalid_args", f"disk must be between 1 and {machine.disk_space:g} GB.")
        if is_bid and compute <= 0:
            raise SimError(400, "invalid_args", "price must be positive.")
        hourly = compute + disk * machine.storage_cost / HOURS_PER_MONTH
        if self.balance() < hourly * self.knobs.min_credit_hours:
            raise SimError(402, "insufficient_credit", f"Your account lacks credit for this instance: balance"
                           f" ${self.balance():.2f}, it needs ${hourly * self.knobs.min_credit_hours:.2f}.")
        starved = is_bid and compute < min_bid
        if starved and not self.quirks["insufficient_bid_stopped"]:
            raise SimError(
                400, "insufficient_bid", f"Bid {compute:.4f} is below the minimum bid {min_bid:.4f}."
            )
        env = {str(k): str(v) for k, v in (body.get("env") or {}).items()}
        self._seq += 1
        inst = Instance(
            id=self._next_instance,
            machine_id=machine.id,
            host_id=machine.host_id,
            gpu_ids=gpus,
            image=str(image or body.get("template_hash_id")),
            disk_gb=disk,
            env=env,
            onstart=str(body.get("onstart") or ""),
            label=body.get("label"),
            runtype=body.get("runtype"),
            is_bid=is_bid,
            price=compute,
            min_bid=min_bid,
            created_at=self.clock(),
            seq=self._seq,
        )
        self._next_instance += 1
        inst.ports = {"22/tcp": self.rng.randint(20000, 65000)}
        for port in port_entries(env):
            inst.ports[port] = self.rng.randint(20000, 65000)
        self.instances[inst.id] = inst
        self.ledger.open(
            inst.id, inst.label, Phase.scheduling.value, inst.created_at, compute, self.storage_rate(inst)
        )
        if starved:
            inst.intended = "stopped"
            self.set_phase(inst, Phase.stopped, f"Bid below the minimum bid ({min_bid:.4f}): not scheduled")
        self.retire_asks(machine.id)
        self.resolve(machine.id)
        return inst

    def set_state(self, instance_id: int, state: str) -> None:
        inst = self.get(instance_id)
        if state == "stopped":
            inst.intended = "stopped"
            if inst.phase != Phase.offline:
                self.set_phase(inst, Phase.stopped, "Stopped by user")
        elif state == "running":
            inst.intended = "running"
            if inst.phase == Phase.stopped:
                self.set_phase(inst, Phase.scheduling, "Scheduling: waiting for GPUs")
        else:
            raise SimError(400, "invalid_args", f"Unknown state {state!r}: use running or stopped.")
        self.resolve(inst.machine_id)

    def relabel(self, instance_id: int, label: str | None) -> None:
        inst = self.get(instance_id)
        inst.label = label
        self.ledger.change(inst.id, self.clock(), label=label)

    def destroy(self, instance_id: int) -> None:
        inst = self.get(instance_id)
        now = self.clock()
        self.set_phase(inst, Phase.stopped, "")
        self.runner.kill(inst.id)
        self.runner.remove(inst.id)
        self.ledger.close(inst.id, now)
        del self.instances[inst.id]
        if self.quirks["destroyed_ghost"]:
            inst.destroyed_at = now
            inst.intended = "stopped"
            self.ghosts[inst.id] = inst
        self.resolve(inst.machine_id)

    def winning_bid(self, inst: Instance) -> float:
        machine = self.machines[inst.machine_id]
        rivals = [self._pg(h) for h in self._rivals(inst)]
        need = max([machine.min_bid_per_gpu, *(p + 0.001 for p in rivals)])
        return round(need * len(inst.gpu_ids), 4)

    def _rivals(self, inst: Instance) -> list[Holder]:
        out: list[Holder] = [
            c
            for c in self.claims.values()
            if c.machine_id == inst.machine_id and set(c.gpu_ids) & set(inst.gpu_ids)
        ]
        out += [
            i
            for i in self.instances.values()
            if i.id != inst.id
            and i.machine_id == inst.machine_id
            and i.intended == "running"
            and set(i.gpu_ids) & set(inst.gpu_ids)
        ]
        return out

    def change_bid(self, instance_id: int, price: float | None) -> Instance:
        inst = self.get(instance_id)
        if not inst.is_bid:
            raise SimError(400, "not_interruptible", f"Instance {instance_id} is on demand; it has no bid.")
        new = self.winning_bid(inst) if price is None else float(price)
        if new <= 0:
            raise SimError(400, "invalid_args", "price must be positive.")
        inst.price = new
        self.ledger.change(inst.id, self.clock(), compute_rate=new)
        self.resolve(inst.machine_id)
        return inst

    # --- what the admin API injects -----------------------------------------------------------------------

    def add_claim(
        self,
        machine_id: int,
        gpu_ids: tuple[int, ...],
        *,
        ondemand: bool,
        price_per_gpu: float,
        duration: float | None,
    ) -> Claim:
        self._seq += 1
        until = None if duration is None else self.clock() + duration
        claim = Claim(self._next_claim, machine_id, gpu_ids, ondemand, price_per_gpu, self._seq, until)
        self._next_claim += 1
        self.claims[claim.id] = claim
        self.resolve(machine_id)
        return claim

    def drop_claims(self, machine_id: int, gpu_ids: tuple[int, ...] | None = None) -> int:
        gone = [
            c.id
            for c in self.claims.values()
            if c.machine_id == machine_id and (gpu_ids is None or set(c.gpu_ids) & set(gpu_ids))
        ]
        for cid in gone:
            del self.claims[cid]
        self.resolve(machine_id)
        return len(gone)

    def host(self, host_id: int) -> Host:
        host = self.hosts.get(host_id)
        if host is None:
            raise SimError(404, "no_such_host", f"Host {host_id} not found.")
        return host

    def balance(self) -> float:
        return self.knobs.credit - self.ledger.spent(self.clock())
