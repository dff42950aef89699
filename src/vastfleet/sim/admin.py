"""The simulator's own admin API under /sim/v1/: inject market events, read the truth and the ledger, tune.

For tests and demos: preempt or outbid an instance, take a host offline, let a rival take an offer, advance
the clock, queue HTTP faults, switch quirks, set rates. Authenticated with the same bearer key as the vast
routes. Answers what the simulator knows to be true, not what the vast API shows.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from vastfleet.sim import disruptions
from vastfleet.sim.entities import SimError
from vastfleet.sim.routing import Call, Routes

ADMIN = Routes()
admin = ADMIN.route


def _num(body: dict[str, Any], name: str, default: float | None = None) -> float | None:
    value = body.get(name, default)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SimError(400, "invalid_args", f"{name} must be a number.") from None


def instance_truth(call: Call, iid: int) -> dict[str, Any]:
    market = call.sim.market
    inst = market.instances.get(iid)
    if inst is None:
        raise SimError(404, "no_such_instance", f"Instance {iid} not found.")
    return {
        "id": inst.id,
        "label": inst.label,
        "machine_id": inst.machine_id,
        "host_id": inst.host_id,
        "gpu_ids": list(inst.gpu_ids),
        "phase": inst.phase.value,
        "intended": inst.intended,
        "is_bid": inst.is_bid,
        "price": inst.price,
        "min_bid": inst.min_bid,
        "starts": inst.starts,
        "status_msg": inst.status_msg,
        "zombie_at": inst.zombie_at,
        "ports": dict(inst.ports),
        "winning_bid": market.winning_bid(inst) if inst.is_bid else None,
        "process": call.sim.runner.info(inst.id),
    }


@admin("GET", "/sim/v1/state/")
def state(call: Call) -> Any:
    market = call.sim.market
    return {
        "seed": market.seed,
        "now": market.clock(),
        "clock_offset": call.sim.clock.offset,
        "hosts": len(market.hosts),
        "machines": len(market.machines),
        "instances": len(market.instances),
        "claims": len(market.claims),
        "offline_hosts": sorted(h.id for h in market.hosts.values() if not h.online),
        "knobs": asdict(market.knobs),
        "quirks": dict(market.quirks),
        "workdir": str(call.sim.workdir),
    }


@admin("GET", "/sim/v1/instances/")
def instances(call: Call) -> Any:
    return {"instances": [instance_truth(call, iid) for iid in sorted(call.sim.market.instances)]}


@admin("GET", r"/sim/v1/instances/(\d+)/")
def one_instance(call: Call) -> Any:
    return instance_truth(call, int(call.args[0]))


@admin("POST", r"/sim/v1/instances/(\d+)/preempt/")
def preempt(call: Call) -> Any:
    iid = int(call.args[0])
    claim = disruptions.preempt(
        call.sim.market,
        iid,
        price=_num(call.body, "price"),
        ondemand=bool(call.body.get("ondemand")),
        duration=_num(call.body, "duration"),
    )
    return {"success": True, "claim": asdict(claim), "instance": instance_truth(call, iid)}


@admin("POST", r"/sim/v1/instances/(\d+)/outbid/")
def outbid(call: Call) -> Any:
    iid = int(call.args[0])
    price = _num(call.body, "price")
    if price is None or price <= 0:
        raise SimError(
            400, "invalid_args", "price (the rival's bid for the whole instance, $/h) is required."
        )
    claim = disruptions.preempt(call.sim.market, iid, price=price, duration=_num(call.body, "duration"))
    truth = instance_truth(call, iid)
    return {
        "success": True,
        "claim": asdict(claim),
        "paused": truth["phase"] == "scheduling",
        "instance": truth,
    }


@admin("POST", r"/sim/v1/instances/(\d+)/resume/")
def resume(call: Call) -> Any:
    iid = int(call.args[0])
    disruptions.resume(call.sim.market, iid)
    return {"success": True, "instance": instance_truth(call, iid)}


@admin("GET", "/sim/v1/hosts/")
def hosts(call: Call) -> Any:
    market = call.sim.market
    return {
        "hosts": [
            {**asdict(h), "machines": [asdict(m) for m in market.machines.values() if m.host_id == h.id]}
            for h in market.hosts.values()
        ]
    }


@admin("POST", r"/sim/v1/hosts/(\d+)/offline/")
def host_offline(call: Call) -> Any:
    disruptions.host_offline(call.sim.market, int(call.args[0]), _num(call.body, "duration"))
    return {"success": True}


@admin("POST", r"/sim/v1/hosts/(\d+)/online/")
def host_online(call: Call) -> Any:
    disruptions.host_online(call.sim.market, int(call.args[0]))
    return {"success": True}


@admin("POST", r"/sim/v1/offers/(\d+)/take/")
def take_offer(call: Call) -> Any:
    claim = disruptions.take_offer(call.sim.market, int(call.args[0]), _num(call.body, "duration"))
    return {"success": True, "claim": asdict(claim)}


@admin("GET", "/sim/v1/claims/")
def claims(call: Call) -> Any:
    return {"claims": [asdict(c) for c in call.sim.market.claims.values()]}


@admin("DELETE", "/sim/v1/claims/")
def clear_claims(call: Call) -> Any:
    market = call.sim.market
    machines = {c.machine_id for c in market.claims.values()}
    dropped = sum(market.drop_claims(mid) for mid in sorted(machines))
    return {"success": True, "dropped": dropped}


@admin("GET", "/sim/v1/ledger/")
def ledger(call: Call) -> Any:
    market = call.sim.market
    market.ledger.credit = market.knobs.credit
    return market.ledger.snapshot(market.clock())


@admin("GET", "/sim/v1/knobs/")
def get_knobs(call: Call) -> Any:
    return asdict(call.sim.market.knobs)


@admin("PUT", "/sim/v1/knobs/")
def set_knobs(call: Call) -> Any:
    try:
        call.sim.market.knobs.update(call.body)
    except KeyError as exc:
        raise SimError(400, "invalid_args", str(exc.args[0])) from None
    except (TypeError, ValueError):
        raise SimError(400, "invalid_args", "Knob values must be numbers.") from None
    return asdict(call.sim.market.knobs)


@admin("GET", "/sim/v1/quirks/")
def get_quirks(call: Call) -> Any:
    return dict(call.sim.market.quirks)


@admin("PUT", "/sim/v1/quirks/")
def set_quirks(call: Call) -> Any:
    quirks = call.sim.market.quirks
    unknown = [name for name in call.body if name not in quirks]
    if unknown:
        raise SimError(400, "invalid_args", f"Unknown quirk(s): {', '.join(unknown)}.")
    quirks.update({name: bool(on) for name, on in call.body.items()})
    return dict(quirks)


@admin("POST", "/sim/v1/clock/advance/")
def advance_clock(call: Call) -> Any:
    seconds = _num(call.body, "seconds", 0.0) or 0.0
    call.sim.advance_clock(seconds)
    return {"success": True, "now": call.sim.clock(), "offset": call.sim.clock.offset}


@admin("POST", "/sim/v1/tick/")
def tick(call: Call) -> Any:
    call.sim.tick()
    return {"success": True, "now": call.sim.clock()}


@admin("POST", "/sim/v1/faults/")
def add_fault(call: Call) -> Any:
    status = int(_num(call.body, "status") or 0)
    delay = float(_num(call.body, "delay") or 0.0)
    if delay < 0 or delay > 600:
        raise SimError(400, "invalid_args", "delay must be between 0 and 600 seconds.")
    if not (400 <= status <= 599 or (status == 0 and delay > 0)):
        raise SimError(400, "invalid_args", "status must be an HTTP error status (400-599), or 0 with a delay.")
    call.sim.gate.add_fault(
        status,
        int(_num(call.body, "count", 1) or 1),
        call.body.get("path"),
        call.body.get("method"),
        bool(call.body.get("text")),
        delay,
    )
    return {"success": True}


@admin("DELETE", "/sim/v1/faults/")
def clear_faults(call: Call) -> Any:
    call.sim.gate.clear()
    return {"success": True}


@admin("GET", "/sim/v1/requests/")
def requests_log(call: Call) -> Any:
    return call.sim.gate.requests()
