"""A small httpx client of the simulator's admin API (/sim/v1/), for tests, demos and benchmarks.

Each method is one admin route; errors raise `httpx.HTTPStatusError` with the simulator's message. Knows
nothing of the market beyond the routes' JSON.
"""

from __future__ import annotations

from typing import Any

import httpx


class SimAdmin:
    def __init__(self, url: str, api_key: str, timeout: float = 10.0) -> None:
        self.http = httpx.Client(
            base_url=url.rstrip("/") + "/sim/v1",
            timeout=timeout,
            headers={"Authorization": f"Bearer {api_key}"},
        )

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        resp = self.http.request(method, path, json=body if body is not None else None)
        if resp.is_error:
            raise httpx.HTTPStatusError(
                f"{method} {path}: {resp.status_code} {resp.text}", request=resp.request, response=resp
            )
        data: dict[str, Any] = resp.json()
        return data

    # --- the truth ---
    def state(self) -> dict[str, Any]:
        return self._call("GET", "/state/")

    def instances(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/instances/")["instances"])

    def instance(self, instance_id: int) -> dict[str, Any]:
        return self._call("GET", f"/instances/{instance_id}/")

    def hosts(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/hosts/")["hosts"])

    def claims(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/claims/")["claims"])

    def ledger(self) -> dict[str, Any]:
        return self._call("GET", "/ledger/")

    def requests(self) -> dict[str, Any]:
        return self._call("GET", "/requests/")

    # --- market events ---
    def preempt(
        self,
        instance_id: int,
        *,
        price: float | None = None,
        ondemand: bool = False,
        duration: float | None = None,
    ) -> dict[str, Any]:
        return self._call(
            "POST",
            f"/instances/{instance_id}/preempt/",
            {"price": price, "ondemand": ondemand, "duration": duration},
        )

    def outbid(self, instance_id: int, price: float, duration: float | None = None) -> dict[str, Any]:
        return self._call("POST", f"/instances/{instance_id}/outbid/", {"price": price, "duration": duration})

    def resume(self, instance_id: int) -> dict[str, Any]:
        return self._call("POST", f"/instances/{instance_id}/resume/", {})

    def host_offline(self, host_id: int, duration: float | None = None) -> dict[str, Any]:
        return self._call("POST", f"/hosts/{host_id}/offline/", {"duration": duration})

    def host_online(self, host_id: int) -> dict[str, Any]:
        return self._call("POST", f"/hosts/{host_id}/online/", {})

    def take_offer(self, offer_id: int, duration: float | None = None) -> dict[str, Any]:
        return self._call("POST", f"/offers/{offer_id}/take/", {"duration": duration})

    def clear_claims(self) -> dict[str, Any]:
        return self._call("DELETE", "/claims/")

    # --- time, faults, tuning ---
    def advance(self, seconds: float) -> dict[str, Any]:
        return self._call("POST", "/clock/advance/", {"seconds": seconds})

    def tick(self) -> dict[str, Any]:
        return self._call("POST", "/tick/", {})

    def fault(
        self,
        status: int,
        count: int = 1,
        path: str | None = None,
        method: str | None = None,
        text: bool = False,
        delay: float = 0.0,
    ) -> dict[str, Any]:
        """The next `count` matching calls answer `status`; with `delay`, each is held that long first
        (status 0 with a delay: held, then served as usual, a slow answer)."""
        return self._call(
            "POST",
            "/faults/",
            {"status": status, "count": count, "path": path, "method": method, "text": text, "delay": delay},
        )

    def clear_faults(self) -> dict[str, Any]:
        return self._call("DELETE", "/faults/")

    def knobs(self) -> dict[str, Any]:
        return self._call("GET", "/knobs/")

    def set_knobs(self, **knobs: float) -> dict[str, Any]:
        return self._call("PUT", "/knobs/", dict(knobs))

    def quirks(self) -> dict[str, bool]:
        return {k: bool(v) for k, v in self._call("GET", "/quirks/").items()}

    def set_quirks(self, **quirks: bool) -> dict[str, bool]:
        return {k: bool(v) for k, v in self._call("PUT", "/quirks/", dict(quirks)).items()}

    def close(self) -> None:
        self.http.close()
