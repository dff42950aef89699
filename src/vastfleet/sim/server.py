"""The simulator's HTTP face: the subset of vast.ai's REST API that the `vastai` client (1.9.x) calls.

One Starlette catch-all route dispatches on (method, path regex), so every route answers with or without its
trailing slash and without redirects. Every JSON answer carries `Content-Type: application/json` exactly (the
CLI refuses `; charset=...`). Auth is `Authorization: Bearer KEY` or `?api_key=KEY` (401 otherwise), except
for the GPU name list and log result URLs. Errors are `{"success": false, "error": code, "msg": text}`.
Admin routes (`/sim/v1/...`) come from `admin.py`; `routing.py` dispatches (holding the market's lock around
every handler).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections import Counter
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse

from vastfleet.sim import cloud
from vastfleet.sim.entities import SimError
from vastfleet.sim.fields import instance_row, offer_row
from vastfleet.sim.query import CONTROL_KEYS, matches, order_rows
from vastfleet.sim.routing import Call, Routes, routing_app

if TYPE_CHECKING:
    from vastfleet.sim.simulator import Simulator

VAST = Routes()  # vast's own routes, as the client calls them
route = VAST.route


def _ok(**extra: Any) -> dict[str, Any]:
    return {"success": True, **extra}


# --- account and catalogue ------------------------------------------------------------------------------


@route("GET", "/api/v0/gpu_names/unique/", auth=False)
def gpu_names(call: Call) -> Any:
    return {"gpu_names": sorted({m.gpu_name for m in call.sim.market.machines.values()})}


@route("GET", "/api/v0/users/current/")
def current_user(call: Call) -> Any:
    credit = round(call.sim.market.balance(), 6)
    return {
        "id": 1,
        "username": "sim",
        "email": "sim@localhost",
        "fullname": "vastfleet simulator",
        "credit": credit,
        "balance": credit,
        "balance_threshold": 0.0,
        "balance_threshold_enabled": False,
        "billed_expected": 0.0,
        "billed_verified": 0.0,
        "paid_expected": 0.0,
        "paid_verified": 0.0,
        "can_pay": True,
        "has_billing": True,
        "has_payout": False,
        "host_agreement_accepted": False,
        "email_verified": True,
        "got_signup_credit": True,
        "ssh_key": None,
        "user": "sim",
        "last4": None,
        "billing_creditonly": False,
        "password_resettable": False,
        "paypal_email": None,
    }


@route("GET", "/api/v0/users/cloud_integrations/")
def cloud_integrations(call: Call) -> Any:
    return [dict(c) for c in cloud.CONNECTIONS]


# --- offers ---------------------------------------------------------------------------------------------


def _offer_kind(value: Any) -> str:
    kind = str(value or "on-demand").lower()
    if kind in ("on-demand", "ondemand"):
        return "on-demand"
    if kind in ("bid", "interruptible"):
        return "bid"
    if kind == "reserved":
        return "reserved"
    raise SimError(400, "invalid_args", f"Unknown offer type {value!r}: use on-demand, bid or reserved.")


def search(sim: Simulator, q: dict[str, Any]) -> dict[str, Any]:
    market = sim.market
    kind = _offer_kind(q.get("type"))
    try:
        storage = float(q.get("allocated_storage") or 5.0)
        limit = int(q["limit"]) if q.get("limit") not in (None, "") else None
    except (TypeError, ValueError) as exc:
        raise SimError(400, "invalid_args", f"Bad number in query: {exc}") from None
    now = market.clock()
    any_machine = next(iter(market.machines.values()))
    known = set(offer_row(market, 0, any_machine, 1, 0.0, kind, storage, now))
    filters = {k: v for k, v in q.items() if k not in CONTROL_KEYS}
    rows = [
        offer_row(market, ask, m, n, min_bid, kind, storage, now)
        for ask, m, n, min_bid in market.open_offers(bid=kind == "bid")
    ]
    rows = [r for r in rows if matches(r, filters, known)]
    rows = order_rows(rows, q.get("order") or [["score", "desc"]])
    if limit is not None and limit > 0:
        rows = rows[:limit]
    return {"offers": rows}


@route("POST", "/api/v0/bundles/")
def bundles(call: Call) -> Any:
    return search(call.sim, call.body)


@route("PUT", "/api/v0/search/asks/")
def search_asks(call: Call) -> Any:
    q = call.body.get("q")
    return search(call.sim, q if isinstance(q, dict) else call.body)


@route("PUT", r"/api/v0/asks/(\d+)/")
def create_instance(call: Call) -> Any:
    inst = call.sim.market.create(int(call.args[0]), call.body)
    return _ok(new_contract=inst.id, instance_api_key=secrets.token_hex(8))


# --- instances ------------------------------------------------------------------------------------------


def _rows(sim: Simulator) -> list[dict[str, Any]]:
    market, now = sim.market, sim.market.clock()
    rows = [instance_row(market, inst, now) for inst in market.instances.values()]
    rows += [instance_row(market, ghost, now, ghost=True) for ghost in market.ghosts.values()]
    return rows


def _json_arg(call: Call, name: str, default: Any) -> Any:
    raw = call.query.get(name)
    if raw in (None, ""):
        return default
    try:
        return json.loads(raw)
    except ValueError:
        raise SimError(400, "invalid_args", f"{name} must be JSON.") from None


@route("GET", "/api/v1/instances/")
def list_instances_v1(call: Call) -> Any:
    filters = _json_arg(call, "select_filters", {}) or {}
    order = _json_arg(call, "order_by", [{"col": "id", "dir": "asc"}])
    cols = _json_arg(call, "select_cols", None)
    limit = max(1, min(25, int(_json_arg(call, "limit", 25) or 25)))
    offset = 0
    token = call.query.get("after_token")
    if token:
        try:
            offset = int(json.loads(base64.urlsafe_b64decode(token.encode()).decode())["offset"])
        except (ValueError, KeyError, TypeError):
            raise SimError(400, "invalid_args", "after_token is not a token this server issued.") from None
    if not isinstance(filters, dict):
        raise SimError(400, "invalid_args", "select_filters must be a JSON object.")
    rows = [r for r in _rows(call.sim) if matches(r, filters)]
    rows = order_rows(rows, order)
    page = rows[offset : offset + limit]
    if isinstance(cols, list) and cols and "*" not in cols:
        page = [{k: r.get(k) for k in ["id", *cols]} for r in page]
    nxt = offset + limit
    next_token = (
        base64.urlsafe_b64encode(json.dumps({"offset": nxt}).encode()).decode() if nxt < len(rows) else None
    )
    labels = Counter(r.get("label") or "" for r in rows)
    return {
        "instances": page,
        "next_token": next_token,
        "total_instances": len(rows),
        "label_counts": dict(labels),
    }


@route("GET", "/api/v0/instances/")
def list_instances_v0(call: Call) -> Any:
    if call.sim.market.quirks["v0_listing_gone"]:
        raise SimError(410, "deprecated", "GET /api/v0/instances/ is deprecated: use /api/v1/instances/.")
    return {"instances": order_rows(_rows(call.sim), [["id", "asc"]])}


@route("GET", "/api/v0/instances/filters/")
def instance_filters(call: Call) -> Any:
    combos = {(r["actual_status"], r["verification"], r["gpu_name"]) for r in _rows(call.sim)}
    return {"filters": [{"actual_status": a, "verification": v, "gpu_name": g} for a, v, g in sorted(combos)]}


@route("GET", r"/api/v0/instances/(\d+)/")
def show_instance(call: Call) -> Any:
    market, iid = call.sim.market, int(call.args[0])
    inst = market.instances.get(iid)
    if inst is not None:
        return {"instances": instance_row(market, inst, market.clock())}
    ghost = market.ghosts.get(iid)
    if ghost is not None:
        return {"instances": instance_row(market, ghost, market.clock(), ghost=True)}
    return {"instances": None}


def _apply_put(call: Call, iid: int) -> None:
    body = call.body
    if "label" in body:
        call.sim.market.relabel(iid, body.get("label"))
    if "state" in body:
        call.sim.market.set_state(iid, str(body["state"]))
    if "label" not in body and "state" not in body:
        raise SimError(400, "invalid_args", "Nothing to change: send state or label.")


@route("PUT", r"/api/v0/instances/(\d+)/")
def put_instance(call: Call) -> Any:
    _apply_put(call, int(call.args[0]))
    return _ok()


@route("PUT", "/api/v0/instances/")
def put_instances(call: Call) -> Any:
    ids = call.body.get("ids") or []
    for iid in ids:
        _apply_put(call, int(iid))
    return _ok()


@route("DELETE", r"/api/v0/instances/(\d+)/")
def destroy_instance(call: Call) -> Any:
    call.sim.market.destroy(int(call.args[0]))
    return _ok()


@route("DELETE", "/api/v0/instances/")
def destroy_instances(call: Call) -> Any:
    for iid in call.body.get("instance_ids") or []:
        call.sim.market.destroy(int(iid))
    return _ok()


@route("PUT", r"/api/v0/instances/bid_price/(\d+)/")
def change_bid(call: Call) -> Any:
    price = call.body.get("price")
    try:
        value = None if price is None else float(price)
    except (TypeError, ValueError):
        raise SimError(400, "invalid_args", "price must be a number.") from None
    call.sim.market.change_bid(int(call.args[0]), value)
    return _ok()


@route("PUT", r"/api/v0/instances/reboot/(\d+)/")
def reboot(call: Call) -> Any:
    market, iid = call.sim.market, int(call.args[0])
    market.set_state(iid, "stopped")
    market.set_state(iid, "running")
    return _ok()


@route("PUT", r"/api/v0/instances/request_logs/(\d+)/")
def request_logs(call: Call) -> Any:
    iid = int(call.args[0])
    call.sim.market.get(iid)
    lines = call.sim.runner.log_text(iid).splitlines()
    if call.body.get("filter"):
        lines = [line for line in lines if str(call.body["filter"]) in line]
    try:
        tail = int(call.body.get("tail") or 1000)
    except (TypeError, ValueError):
        raise SimError(400, "invalid_args", "tail must be a number of lines.") from None
    text = "\n".join(lines[-tail:]) + ("\n" if lines else "")
    token = secrets.token_urlsafe(12)
    call.sim.keep_log_result(token, text)
    return _ok(result_url=f"{call.base_url}/sim/v1/log_results/{token}", msg="Logs are being prepared.")


@route("GET", r"/sim/v1/log_results/([A-Za-z0-9_\-]+)/", auth=False)
def log_result(call: Call) -> Any:
    text = call.sim.log_results.get(call.args[0])
    if text is None:
        raise SimError(404, "not_ready", "No such log result.")
    return PlainTextResponse(text)


@route("POST", "/api/v0/commands/rclone/")
def cloud_copy(call: Call) -> Any:
    sim, body = call.sim, call.body
    try:
        iid = int(str(body.get("instance_id")))
    except (TypeError, ValueError):
        raise SimError(400, "invalid_args", "instance_id is required.") from None
    inst = sim.market.get(iid)
    if not sim.market.hosts[inst.host_id].online:
        raise SimError(409, "host_offline", f"Instance {iid}'s host is offline: its disk cannot be reached.")
    conn = str(body.get("selected") or "")
    if not conn.isdigit():
        raise SimError(400, "invalid_args", "selected must be the id of a cloud connection.")
    transfer = str(body.get("transfer") or "Instance to Cloud").lower()
    sandbox, bucket = sim.runner.sandbox(iid), sim.cloud_dir(conn)
    sandbox.mkdir(parents=True, exist_ok=True)
    src, dst = str(body.get("src") or ""), str(body.get("dst") or "/workspace")
    if transfer == "instance to cloud":
        moved = cloud.copy(cloud.instance_path(sandbox, src), cloud.cloud_path(bucket, dst))
        upload = True
    elif transfer == "cloud to instance":
        moved = cloud.copy(cloud.cloud_path(bucket, src), cloud.instance_path(sandbox, dst))
        upload = False
    else:
        raise SimError(400, "invalid_args", "transfer must be 'Instance To Cloud' or 'Cloud To Instance'.")
    machine = sim.market.machines[inst.machine_id]
    cost = sim.market.ledger.bandwidth(
        iid, moved, machine.inet_up_cost if upload else machine.inet_down_cost, upload
    )
    return _ok(msg="Cloud Copy Operation Finished", bytes=moved, cost=cost)


def create_app(sim: Simulator) -> Starlette:
    from vastfleet.sim.admin import ADMIN

    return routing_app(sim, VAST.entries + ADMIN.entries)
