"""The sweep routes for the CLI: `Client` (VASTFLEET_URL, VASTFLEET_TOKEN, its error mapping) plus the
`/v1/sweeps` calls."""

from __future__ import annotations

from typing import Any

from vastfleet.client import Client, _segment
from vastfleet.sweeps.models import BestTrial, Sweep, SweepEvent, SweepStatus
from vastfleet.sweeps.spec import SweepSpec


class SweepClient(Client):
    def submit_sweep(self, spec: SweepSpec | dict[str, Any]) -> Sweep:
        body = spec.model_dump(mode="json") if isinstance(spec, SweepSpec) else spec
        return Sweep.model_validate(self._call("POST", "/v1/sweeps", json=body))

    def sweeps(self, limit: int = 100) -> list[Sweep]:
        return [Sweep.model_validate(s) for s in self._call("GET", "/v1/sweeps", params={"limit": limit})]

    def sweep_status(self, sweep_id: str, trials: bool = True) -> SweepStatus:
        data = self._call("GET", f"/v1/sweeps/{_segment(sweep_id)}", params={"trials": str(trials).lower()})
        return SweepStatus.model_validate(data)

    def sweep_best(self, sweep_id: str, k: int = 5) -> list[BestTrial]:
        data = self._call("GET", f"/v1/sweeps/{_segment(sweep_id)}/best", params={"k": k})
        return [BestTrial.model_validate(b) for b in data]

    def sweep_events(self, sweep_id: str) -> list[SweepEvent]:
        return [SweepEvent.model_validate(e) for e in self._call("GET", f"/v1/sweeps/{_segment(sweep_id)}/events")]

    def sweep_journal(self, sweep_id: str, after: int = -1) -> dict[str, Any]:
        data = self._call("GET", f"/v1/sweeps/{_segment(sweep_id)}/journal", params={"after": after})
        return data  # type: ignore[no-any-return]

    def cancel_sweep(self, sweep_id: str) -> Sweep:
        return Sweep.model_validate(self._call("POST", f"/v1/sweeps/{_segment(sweep_id)}/cancel"))
