"""An in-memory marketplace that records every call: enough state for the loop's unit tests.

(The shared `tests.market_doubles.RecordingMarketplace` records calls against canned answers; the loop
needs a marketplace that remembers what it rented, so this one keeps instances.)
"""

from __future__ import annotations

from vastfleet.errors import MarketUnavailable, OfferUnavailable
from vastfleet.spec.market import CreateRequest, Instance, Offer, OfferQuery


class MemoryMarket:
    def __init__(self, offers: list[Offer] | None = None) -> None:
        self.offers = {o.id: o for o in offers or []}
        self.instances: dict[int, Instance] = {}
        self.calls: list[tuple[str, tuple]] = []
        self.next_id = 1000
        self.fail_listing = False
        self.crash_after_create = False  # raise after renting: a scheduler killed between create and record

    def _rec(self, name: str, *args: object) -> None:
        self.calls.append((name, args))

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def search_offers(self, query: OfferQuery) -> list[Offer]:
        self._rec("search_offers", query.kind)
        kind_bid = query.kind.value == "bid"
        return [o.model_copy(update={"is_bid": kind_bid}) for o in self.offers.values()]

    def create_instance(self, offer_id: int, request: CreateRequest) -> int:
        self._rec("create_instance", offer_id, request.label)
        offer = self.offers.pop(offer_id, None)
        if offer is None:
            raise OfferUnavailable(f"offer {offer_id} is gone")
        self.next_id += 1
        self.instances[self.next_id] = Instance(id=self.next_id, label=request.label, actual_status="loading",
                                                intended_status="running", cur_state="running",
                                                is_bid=request.bid is not None, gpu_name=offer.gpu_name)
        if self.crash_after_create:
            raise KeyboardInterrupt("killed between create and record")
        return self.next_id

    def list_instances(self, label: str | None = None) -> list[Instance]:
        self._rec("list_instances")
        if self.fail_listing:
            raise MarketUnavailable("listing failed")
        return [i for i in self.instances.values() if label is None or i.label == label]

    def get_instance(self, instance_id: int) -> Instance | None:
        self._rec("get_instance", instance_id)
        return self.instances.get(instance_id)

    def destroy_instance(self, instance_id: int) -> None:
        self._rec("destroy_instance", instance_id)
        self.instances.pop(instance_id, None)

    def stop_instance(self, instance_id: int) -> None:
        self._rec("stop_instance", instance_id)

    def start_instance(self, instance_id: int) -> None:
        self._rec("start_instance", instance_id)

    def change_bid(self, instance_id: int, price: float) -> None:
        self._rec("change_bid", instance_id, price)

    def request_logs(self, instance_id: int, tail: int | None = None) -> str:
        return ""

    def cloud_copy(self, instance_id: int, src: str, dst: str, connection_id: str,
                   to_cloud: bool = True) -> float | None:
        self._rec("cloud_copy", instance_id)
        return None

    def balance(self) -> float:
        return 100.0

    def set_status(self, instance_id: int, status: str) -> None:
        self.instances[instance_id] = self.instances[instance_id].model_copy(update={"actual_status": status})
