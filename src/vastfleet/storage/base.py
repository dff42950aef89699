"""The checkpoint store interface: presigned URLs for the agent, verification for the control plane.

The instance never holds storage credentials: the API hands the agent a short-lived URL per object
(`presign_put` / `presign_get`), and `verify` confirms sizes and sha256 before a checkpoint is committed.
Objects live under `jobs/<job id>/epoch-<n>/<step>/` so that a stale epoch cannot overwrite a newer one.
"""

from __future__ import annotations

from typing import Protocol


class CheckpointStore(Protocol):
    def presign_put(self, key: str, size: int, sha256: str, expires_s: int = 3600) -> str:
        """A URL the agent PUTs one object to."""
        ...

    def presign_get(self, key: str, expires_s: int = 3600) -> str:
        """A URL the agent GETs one object from."""
        ...

    def stat(self, key: str) -> tuple[int, str] | None:
        """(size, sha256) of a stored object, or None when absent."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix`; returns how many."""
        ...
