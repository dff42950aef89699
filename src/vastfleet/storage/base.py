"""The checkpoint store interface: presigned URLs for the agent, verification for the control plane.

The instance never holds storage credentials: the API hands the agent a short-lived URL per object
(`presign_put` / `presign_get`, plus the headers the PUT must carry from `put_headers`), and the control
plane confirms sizes and sha256 with `stat` (computed from the stored bytes, never taken from the
uploader's word) before a checkpoint is committed. Objects live under
`jobs/<job id>/epoch-<n>/step-<s>-<manifest digest>/<relative path>` (see
`vastfleet.storage.manifest.checkpoint_prefix`) so that a stale epoch cannot overwrite a newer one and a key
is never written with two contents; both stores are write-once (an existing object is never replaced).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class CheckpointStore(Protocol):
    def presign_put(self, key: str, size: int, sha256: str, expires_s: int = 900) -> str:
        """A URL the agent PUTs one object to."""
        ...

    def put_headers(self, key: str, size: int, sha256: str) -> dict[str, str]:
        """The headers the agent must send with its PUT to the `presign_put` URL (signed into it)."""
        ...

    def presign_get(self, key: str, expires_s: int = 900) -> str:
        """A URL the agent GETs one object from."""
        ...

    def stat(self, key: str) -> tuple[int, str] | None:
        """(size, sha256 hex) of the stored bytes, or None when absent. Computed or confirmed by the
        store itself: never the uploader's claim."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix`; returns how many."""
        ...

    def keys_under(self, prefix: str) -> list[str]:
        """The keys of the objects under `prefix` (what a salvage's cloud copy put there), sorted."""
        ...
