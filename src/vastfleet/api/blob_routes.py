"""The routes that serve a LocalCheckpointStore: `PUT/GET /v1/blobs/{key}?exp=..&sig=..`.

Authenticated by the URL's signature alone (made by `LocalCheckpointStore.presign_*` for one method, one
key, and for a PUT one size and sha256): no token travels with the bytes. A PUT is refused once the attempt it
was signed for is over (`may_put`, given by the agent API: the key names job and epoch), streams to a
temporary file, stops at the signed size, and lands only if size and sha256 match and the key holds no other
bytes (`finish_put`), so a reader never sees a partial, foreign or replaced object. Included by
`agent_router` when the store is local.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from vastfleet.errors import BadInput, VastfleetError
from vastfleet.storage.local import BLOB_ROUTE, LocalCheckpointStore


def _int(value: str | None, name: str) -> int:
    try:
        return int(value or "")
    except ValueError:
        raise BadInput(f"the storage URL lacks a valid {name}") from None


def blob_router(store: LocalCheckpointStore, may_put: Callable[[str], None] | None = None) -> APIRouter:
    router = APIRouter(prefix=BLOB_ROUTE.rstrip("/"), tags=["blobs"])

    @router.put("/{key:path}", name="blob_put")
    async def put_blob(key: str, request: Request) -> Any:
        q = request.query_params
        tmp = None
        try:
            size, sha256 = _int(q.get("size"), "size"), q.get("sha256", "")
            store.check_signature("PUT", key, _int(q.get("exp"), "exp"), q.get("sig", ""), size, sha256)
            if may_put is not None:
                await run_in_threadpool(may_put, key)  # a job store lookup: off the loop
            tmp = store.tmp_path(key)
            received = 0
            with tmp.open("wb") as fh:  # small local writes; hashing happens off the loop below
                async for chunk in request.stream():
                    received += len(chunk)
                    if received > size:
                        raise BadInput("the upload is larger than its signed size")
                    fh.write(chunk)
            await run_in_threadpool(store.finish_put, tmp, key, size, sha256)  # hashing: off the loop
            return {"stored": True, "size": size}
        except VastfleetError as exc:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            return JSONResponse({"detail": str(exc)}, status_code=exc.http_status)

    @router.get("/{key:path}", name="blob_get")
    def get_blob(key: str, request: Request) -> Any:
        q = request.query_params
        try:
            store.check_signature("GET", key, _int(q.get("exp"), "exp"), q.get("sig", ""))
            return FileResponse(store.open_for_get(key), media_type="application/octet-stream")
        except VastfleetError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=exc.http_status)

    return router
