"""The narrow interface every marketplace call goes through.

`VastMarketplace` (in `vast.py`) implements it on the maintained `vastai` package; tests drive decision
logic with small recording doubles of this protocol. Implementations raise only the errors of
`vastfleet.errors` (MarketError and its children, MarketUnavailable after retries).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from vastfleet.spec.market import CreateRequest, Instance, Offer, OfferQuery


@runtime_checkable
class Marketplace(Protocol):
    def search_offers(self, query: OfferQuery) -> list[Offer]:
        """Offers matching the query, in the query's order."""
        ...

    def create_instance(self, offer_id: int, request: CreateRequest) -> int:
        """Rent the offer; returns the new instance id. OfferUnavailable when it is gone."""
        ...

    def list_instances(self, label: str | None = None) -> list[Instance]:
        """Every instance of this account (with `label`: only those carrying it, one short request where the
        full listing pages). Raises on a failed listing: never an empty list by mistake."""
        ...

    def get_instance(self, instance_id: int) -> Instance | None:
        """One instance, or None when the marketplace says it is gone."""
        ...

    def stop_instance(self, instance_id: int) -> None: ...

    def start_instance(self, instance_id: int) -> None: ...

    def destroy_instance(self, instance_id: int) -> None:
        """Destroy; an instance already gone is not an error (idempotent)."""
        ...

    def change_bid(self, instance_id: int, price: float) -> None: ...

    def request_logs(self, instance_id: int, tail: int | None = None) -> str: ...

    def cloud_copy(self, instance_id: int, src: str, dst: str, connection_id: str,
                   to_cloud: bool = True) -> float | None:
        """Copy between the instance's disk and a cloud connection (works while the instance is stopped);
        returns what the marketplace billed for the bandwidth when its answer says (else None)."""
        ...

    def balance(self) -> float:
        """Credit left on the account, in dollars."""
        ...
