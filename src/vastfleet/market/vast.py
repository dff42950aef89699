"""`VastMarketplace`: the `Marketplace` protocol on the maintained `vastai` package (its `VastAI` SDK class).

Owns: calling the client for each operation, retrying transient failures (`retry.RetryPolicy`), counting
every request through `on_call(operation, code, seconds)`, and translating failures into
`vastfleet.errors` (`errors.translate`). Never speaks HTTP itself, never knows jobs or Redis, never prints,
never exits the process, and never puts the API key in an error message.

Rules that protect money:
- `list_instances` raises on a failed, partial or malformed listing; it never answers [] by mistake.
- `create_instance` repeats a request only when vast certainly did not act on it (429, connection
  refused): repeating a create after a 502 could rent twice. The caller adopts by label instead.
- `destroy_instance` treats "already gone" as success.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any, TypeVar

from vastai import VastAI

from vastfleet.errors import BadInput, InstanceGone, MarketError, VastfleetError
from vastfleet.market import convert
from vastfleet.market.errors import (
    MalformedAnswer,
    is_refused_unprocessed,
    is_transient,
    outcome_code,
    refusal,
    translate,
)
from vastfleet.market.retry import RetryPolicy
from vastfleet.spec.market import BidKind, CreateRequest, Instance, Offer, OfferQuery

T = TypeVar("T")
CallObserver = Callable[[str, str, float], None]

DEFAULT_SERVER = "https://console.vast.ai"
_MAX_PAGES = 10_000  # a listing that pages longer than this is broken, not big


def _no_observer(operation: str, code: str, seconds: float) -> None:
    return None


class VastMarketplace:
    """The vast.ai marketplace (or the simulator speaking its REST API) behind the `Marketplace` protocol.

    `api_key`: the account's key (never logged). `server_url`: e.g. https://console.vast.ai.
    `retry`: our retry policy. `on_call(operation, code, seconds)`: called once per HTTP request, with
    code "ok", the HTTP status ("429", "500"...), "connection_error", "timeout" or "malformed".
    `timeout_s`: per-request timeout. `page_size`: rows per page of the instance listing.
    `client_retries`: tries inside the vastai client itself (1 = only our policy retries).
    """

    def __init__(
        self,
        api_key: str,
        server_url: str = DEFAULT_SERVER,
        *,
        retry: RetryPolicy | None = None,
        on_call: CallObserver | None = None,
        timeout_s: float = 30.0,
        page_size: int = 100,
        client_retries: int = 1,
    ) -> None:
        if not api_key:
            raise ValueError("VastMarketplace needs an API key")
        if page_size < 1:
            raise ValueError("page_size must be positive")
        self.server_url = server_url.rstrip("/")
        self._api_key = api_key
        self._retry = retry or RetryPolicy()
        self._on_call = on_call or _no_observer
        self._page_size = page_size
        # explain/curl stay off: they are the client's only print and sys.exit paths
        self._sdk = VastAI(
            api_key=api_key,
            server_url=self.server_url,
            retry=max(1, client_retries),
            raw=True,
            explain=False,
            quiet=True,
            curl=False,
        )
        self._sdk.client.timeout = timeout_s

    def __repr__(self) -> str:  # never shows the key
        return f"VastMarketplace(server_url={self.server_url!r})"

    # --- the protocol ---------------------------------------------------------------------------------

    def search_offers(self, query: OfferQuery) -> list[Offer]:
        args = convert.offer_search_args(query)
        rows = self._call(
            "search_offers",
            lambda: self._sdk.search_offers(
                query=args["query"],
                type=args["offer_type"],
                order=args["order"],
                limit=args["limit"],
                storage=args["storage"],
                no_default=args["no_default"],
            ),
        )
        return self._read("search_offers", convert.offers_from_answer, rows, query.kind is BidKind.bid)

    def create_instance(self, offer_id: int, request: CreateRequest) -> int:
        subject = f"offer {offer_id}"
        kwargs = convert.create_args(request)
        answer = self._call(
            "create_instance",
            lambda: self._sdk.create_instance(int(offer_id), **kwargs),
            subject=subject,
            not_found="offer",
            idempotent=False,
        )
        if not isinstance(answer, dict) or answer.get("success") is False:
            raise refusal(
                answer, "create_instance", api_key=self._api_key, subject=subject, not_found="offer"
            )
        new_id = answer.get("new_contract")
        if isinstance(new_id, bool) or not isinstance(new_id, (int, str)) or not str(new_id).isdigit():
            raise MarketError(
                f"create_instance {subject}: vast.ai answered without a new instance id "
                f"(fields: {', '.join(sorted(map(str, answer)))[:200]})",
                operation="create_instance",
            )
        return int(new_id)

    def list_instances(self, label: str | None = None) -> list[Instance]:
        params: dict[str, Any] = {
            "select_filters": {} if label is None else {"label": {"eq": label}},
            "order_by": [{"col": "id", "dir": "asc"}],
            "limit": self._page_size,
        }
        by_id: dict[int, Instance] = {}
        seen_tokens: set[str] = set()
        total: Any = None
        for _ in range(_MAX_PAGES):
            page = self._call("list_instances", self._sdk.show_instances_v1, dict(params))
            rows, token, total = self._read("list_instances", _listing_page, page)
            for row in rows:
                inst = self._read("list_instances", convert.instance_from_row, row)
                by_id[inst.id] = inst
            if not token:
                break
            if token in seen_tokens:
                raise MarketError(
                    "list_instances: vast.ai repeated a page token; the listing is unusable",
                    operation="list_instances",
                )
            seen_tokens.add(token)
            params["after_token"] = token
        else:
            raise MarketError(
                f"list_instances: more than {_MAX_PAGES} pages; the listing is unusable",
                operation="list_instances",
            )
        if isinstance(total, int) and not isinstance(total, bool) and total > len(by_id):
            # instances created while we paged land after our cursor, so fewer than total means rows
            # were lost: an observation error, never a partial truth
            raise MarketError(
                f"list_instances: vast.ai reported {total} instances but listed {len(by_id)}",
                operation="list_instances",
            )
        # the filter is checked here too: a server that ignored it answers the whole listing, never a stranger
        return [i for i in by_id.values() if label is None or i.label == label]

    def get_instance(self, instance_id: int) -> Instance | None:
        subject = f"instance {instance_id}"
        try:
            row = self._call(
                "get_instance", self._show_instance, int(instance_id), subject=subject, not_found="instance"
            )
        except InstanceGone:
            return None
        if row is None:
            return None
        return self._read("get_instance", convert.instance_from_row, row)

    def stop_instance(self, instance_id: int) -> None:
        self._act("stop_instance", instance_id, lambda: self._sdk.stop_instance(int(instance_id)))

    def start_instance(self, instance_id: int) -> None:
        self._act("start_instance", instance_id, lambda: self._sdk.start_instance(int(instance_id)))

    def destroy_instance(self, instance_id: int) -> None:
        try:
            self._act("destroy_instance", instance_id, lambda: self._sdk.destroy_instance(int(instance_id)))
        except InstanceGone:
            return  # already gone is what we wanted

    def change_bid(self, instance_id: int, price: float) -> None:
        if not price > 0:
            raise BadInput(f"a bid must be a positive $/h, not {price!r}")
        self._act(
            "change_bid", instance_id, lambda: self._sdk.change_bid(int(instance_id), price=float(price))
        )

    def request_logs(self, instance_id: int, tail: int | None = None) -> str:
        subject = f"instance {instance_id}"
        tail_arg = str(int(tail)) if tail else None
        answer = self._call(
            "request_logs",
            lambda: self._sdk.logs(int(instance_id), tail=tail_arg),
            subject=subject,
            not_found="instance",
        )
        if isinstance(answer, str):
            return answer
        if isinstance(answer, dict) and answer.get("success") is False:
            raise refusal(answer, "request_logs", api_key=self._api_key, subject=subject)
        raise MarketError(f"request_logs {subject}: vast.ai gave no logs", operation="request_logs")

    def cloud_copy(
        self, instance_id: int, src: str, dst: str, connection_id: str, to_cloud: bool = True
    ) -> float | None:
        transfer = "Instance to Cloud" if to_cloud else "Cloud to Instance"
        answer = self._act(
            "cloud_copy",
            instance_id,
            lambda: self._sdk.cloud_copy(
                src=src,
                dst=dst,
                instance=str(int(instance_id)),
                connection=str(connection_id),
                transfer=transfer,
            ),
        )
        cost = answer.get("cost") if isinstance(answer, dict) else None
        return float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None

    def balance(self) -> float:
        user = self._call("balance", self._sdk.show_user)

        def credit() -> float:
            if not isinstance(user, dict):
                raise MalformedAnswer("the user answer is not an object")
            for key in ("credit", "balance"):
                value = user.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    return float(value)
            raise MalformedAnswer("the user answer has no credit")

        return self._read("balance", credit)

    # --- plumbing -------------------------------------------------------------------------------------

    def _show_instance(self, instance_id: int) -> Any:
        try:
            return self._sdk.show_instance(instance_id)
        except (KeyError, TypeError):
            # the client post-processes the row (start_date arithmetic, extra_env pairs) and chokes on a
            # row still being created; read it through the client's own transport without that step
            r = self._sdk.client.get(f"/instances/{instance_id}/", query_args={"owner": "me"})
            r.raise_for_status()
            body = r.json()
            if not isinstance(body, dict) or "instances" not in body:
                raise MalformedAnswer("the instance answer has no 'instances'") from None
            return body["instances"]

    def _act(self, operation: str, instance_id: int, fn: Callable[[], Any]) -> Any:
        subject = f"instance {instance_id}"
        answer = self._call(operation, fn, subject=subject, not_found="instance")
        if isinstance(answer, dict) and answer.get("success") is False:
            raise refusal(answer, operation, api_key=self._api_key, subject=subject)
        return answer

    def _call(
        self,
        operation: str,
        fn: Callable[..., T],
        *args: Any,
        subject: str = "",
        not_found: str = "",
        idempotent: bool = True,
    ) -> T:
        """`fn(*args)` (one client call), counted per request, retried per policy, failures translated."""

        def attempt() -> T:
            started = time.monotonic()
            try:
                result = fn(*args)
            except (Exception, SystemExit) as exc:
                self._observe(operation, outcome_code(exc), time.monotonic() - started)
                if isinstance(exc, SystemExit):
                    # the client's only exit path is its curl mode, which we never enable; keep the
                    # process alive whatever happens
                    raise _ClientExited(exc.code) from None
                raise
            self._observe(operation, "ok", time.monotonic() - started)
            return result

        try:
            return self._retry.run(attempt, is_transient if idempotent else is_refused_unprocessed)
        except _ClientExited as exc:
            raise MarketError(
                f"{operation} {subject}: the vastai client tried to exit (code {exc.code})",
                operation=operation,
            ) from None
        except VastfleetError:
            raise
        except Exception as exc:  # noqa: BLE001 - the one boundary where the client's failures become ours
            raise translate(
                exc,
                operation,
                api_key=self._api_key,
                server_url=self.server_url,
                subject=subject,
                not_found=not_found,
            ) from None

    def _read(self, operation: str, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` converting an answer; a shape we cannot read becomes MarketError."""
        try:
            return fn(*args)
        except (MalformedAnswer, ValueError, KeyError, TypeError) as exc:
            raise translate(exc, operation, api_key=self._api_key, server_url=self.server_url) from None

    def _observe(self, operation: str, code: str, seconds: float) -> None:
        with contextlib.suppress(Exception):  # a broken metrics hook must not break a marketplace call
            self._on_call(operation, code, seconds)


class _ClientExited(Exception):
    def __init__(self, code: object) -> None:
        super().__init__(code)
        self.code = code


def _listing_page(page: Any) -> tuple[list[Any], str | None, Any]:
    """(rows, next_token, total_instances) of one v1 page; a page without a row list is malformed."""
    if not isinstance(page, dict):
        raise MalformedAnswer(f"a listing page is a {type(page).__name__}, not an object")
    rows = page.get("instances")
    if not isinstance(rows, list):
        raise MalformedAnswer("a listing page has no instance list")
    token = page.get("next_token")
    if token is not None and not isinstance(token, (str, int)):
        raise MalformedAnswer("a listing page has a next_token of the wrong type")
    return rows, (str(token) if token not in (None, "") else None), page.get("total_instances")
