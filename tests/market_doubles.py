"""A recording in-memory double of the `Marketplace` protocol, for the decision logic's unit tests.

Holds offers and instances in dicts, applies each call the way vast roughly would (create removes the
offer, stop/start set the statuses, destroy removes), and records every call as `(method, args)` in
`calls`. `forbid_calls()` makes any further call fail the test, so a scheduler test can prove that "a
second pass over a settled world makes zero marketplace calls". Errors to inject: `fail_next(method, exc)`.

Usage:
    market = RecordingMarketplace(offers=[make_offer(id=1)])
    iid = market.create_instance(1, request)
    market.calls == [("create_instance", (1, request))]
    with market.forbidding():   # or market.forbid_calls() ... market.allow_calls()
        scheduler.reconcile_once()
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from vastfleet.errors import InstanceGone, OfferUnavailable
from vastfleet.spec.market import BidKind, CreateRequest, Instance, Offer, OfferQuery


class ForbiddenMarketCall(AssertionError):
    """A marketplace call happened while calls were forbidden."""


def make_offer(**overrides: Any) -> Offer:
    fields: dict[str, Any] = {
        "id": 1,
        "machine_id": 100,
        "host_id": 10,
        "gpu_name": "RTX 4090",
        "num_gpus": 1,
        "gpu_ram_gb": 24.0,
        "cuda_max_good": 12.4,
        "dlperf": 80.0,
        "dph_total": 0.40,
        "min_bid": 0.20,
        "disk_space": 200.0,
        "reliability": 0.99,
        "verified": True,
        "direct_port_count": 10,
        "inet_down": 500.0,
        "geolocation": "US",
    }
    fields.update(overrides)
    return Offer(**fields)


class RecordingMarketplace:
    """In-memory `Marketplace`; see the module docstring."""

    def __init__(
        self,
        offers: Iterable[Offer] = (),
        instances: Iterable[Instance] = (),
        credit: float = 100.0,
        first_instance_id: int = 1000,
    ) -> None:
        self.offers: dict[int, Offer] = {o.id: o for o in offers}
        self.instances: dict[int, Instance] = {i.id: i for i in instances}
        self.requests: dict[int, CreateRequest] = {}  # instance id -> how it was created
        self.logs: dict[int, str] = {}
        self.credit = credit
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self._ids = itertools.count(first_instance_id)
        self._forbidden = False
        self._failures: dict[str, list[BaseException]] = {}

    # --- test controls ----------------------------------------------------------------------------------

    def forbid_calls(self) -> None:
        self._forbidden = True

    def allow_calls(self) -> None:
        self._forbidden = False

    @contextmanager
    def forbidding(self) -> Iterator[None]:
        self.forbid_calls()
        try:
            yield
        finally:
            self.allow_calls()

    def fail_next(self, method: str, exc: BaseException) -> None:
        """The next call of `method` raises `exc` (queued: several calls fail in order)."""
        self._failures.setdefault(method, []).append(exc)

    def reset_calls(self) -> None:
        self.calls.clear()

    def methods_called(self) -> list[str]:
        return [m for m, _ in self.calls]

    def add_offer(self, offer: Offer) -> None:
        self.offers[offer.id] = offer

    def set_status(self, instance_id: int, actual: str | None, **fields: Any) -> None:
        """Make the world move (a preemption, a host going offline) without recording a call."""
        inst = self.instances[instance_id]
        self.instances[instance_id] = inst.model_copy(update={"actual_status": actual, **fields})

    def _record(self, method: str, *args: Any) -> None:
        if self._forbidden:
            raise ForbiddenMarketCall(
                f"unexpected marketplace call {method}{args!r} while calls are forbidden"
            )
        self.calls.append((method, args))
        queued = self._failures.get(method)
        if queued:
            raise queued.pop(0)

    def _instance(self, instance_id: int) -> Instance:
        inst = self.instances.get(instance_id)
        if inst is None:
            raise InstanceGone(f"instance {instance_id} no longer exists on vast.ai")
        return inst

    # --- the protocol -----------------------------------------------------------------------------------

    def search_offers(self, query: OfferQuery) -> list[Offer]:
        self._record("search_offers", query)
        names = {n.replace("_", " ") for n in query.gpu_names}
        found = [
            o.model_copy(update={"is_bid": query.kind is BidKind.bid})
            for o in self.offers.values()
            if (not names or o.gpu_name in names)
            and (query.num_gpus is None or o.num_gpus == query.num_gpus)
            and (query.min_gpu_ram_gb is None or o.gpu_ram_gb >= query.min_gpu_ram_gb)
            and (query.min_cuda is None or o.cuda_max_good >= query.min_cuda)
            and (query.min_disk_gb is None or o.disk_space >= query.min_disk_gb)
            and (query.min_reliability is None or o.reliability >= query.min_reliability)
            and (query.min_direct_ports is None or o.direct_port_count >= query.min_direct_ports)
            and (query.min_inet_down_mbps is None or o.inet_down >= query.min_inet_down_mbps)
            and (query.max_dph is None or o.dph_total <= query.max_dph)
            and (query.verified is None or o.verified == query.verified)
            and (not query.geolocations or o.geolocation in query.geolocations)
        ]
        for name, direction in reversed(query.order):
            found.sort(key=lambda o: getattr(o, name, 0.0), reverse=direction == "desc")
        return found[: query.limit] if query.limit else found

    def create_instance(self, offer_id: int, request: CreateRequest) -> int:
        self._record("create_instance", offer_id, request)
        offer = self.offers.pop(offer_id, None)
        if offer is None:
            raise OfferUnavailable(f"offer {offer_id} is no longer available")
        iid = next(self._ids)
        low_bid = request.bid is not None and request.bid < offer.min_bid
        self.instances[iid] = Instance(
            id=iid,
            label=request.label,
            machine_id=offer.machine_id,
            host_id=offer.host_id,
            gpu_name=offer.gpu_name,
            num_gpus=offer.num_gpus,
            actual_status="stopped" if low_bid else "loading",
            intended_status="running",
            cur_state="stopped" if low_bid else "running",
            dph_total=request.bid if request.bid is not None else offer.dph_total,
            is_bid=request.bid is not None,
            min_bid=offer.min_bid,
            bid_price=request.bid,
            disk_space=request.disk_gb,
            reliability=offer.reliability,
        )
        self.requests[iid] = request
        return iid

    def list_instances(self, label: str | None = None) -> list[Instance]:
        self._record("list_instances")
        return [i for i in self.instances.values() if label is None or i.label == label]

    def get_instance(self, instance_id: int) -> Instance | None:
        self._record("get_instance", instance_id)
        return self.instances.get(instance_id)

    def stop_instance(self, instance_id: int) -> None:
        self._record("stop_instance", instance_id)
        self._instance(instance_id)
        self.set_status(instance_id, "stopped", intended_status="stopped", cur_state="stopped")

    def start_instance(self, instance_id: int) -> None:
        self._record("start_instance", instance_id)
        self._instance(instance_id)
        self.set_status(instance_id, "running", intended_status="running", cur_state="running")

    def destroy_instance(self, instance_id: int) -> None:
        self._record("destroy_instance", instance_id)
        self.instances.pop(instance_id, None)

    def change_bid(self, instance_id: int, price: float) -> None:
        self._record("change_bid", instance_id, price)
        inst = self._instance(instance_id)
        self.instances[instance_id] = inst.model_copy(update={"bid_price": price, "dph_total": price})

    def request_logs(self, instance_id: int, tail: int | None = None) -> str:
        self._record("request_logs", instance_id, tail)
        self._instance(instance_id)
        text = self.logs.get(instance_id, "")
        if tail:
            text = "\n".join(text.splitlines()[-tail:])
        return text

    def cloud_copy(
        self, instance_id: int, src: str, dst: str, connection_id: str, to_cloud: bool = True
    ) -> float | None:
        self._record("cloud_copy", instance_id, src, dst, connection_id, to_cloud)
        self._instance(instance_id)
        return None

    def balance(self) -> float:
        self._record("balance")
        return self.credit
