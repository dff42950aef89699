"""A checkpoint store in a local directory, served by the API with HMAC-signed URLs (the embedded default).

URLs look like `{base_url}/v1/blobs/{key}?exp=<unix time>&sig=<hmac>` for GET and additionally carry
`&size=<n>&sha256=<hex>` for PUT; the signature is HMAC-SHA256 with the store's secret over
(method, key, exp, size, sha256), so a URL cannot be reused for another object, another method, or other
bytes. The PUT route (`vastfleet.api.blob_routes`) streams the body to a temporary file, refuses it unless
its size and sha256 are the signed ones, then links it into place only where no object is yet: a stored
object is always whole and never replaced (the same bytes again are accepted; other bytes are refused).
`stat` re-reads the file and hashes it, so commit verification trusts nothing but the bytes on disk.

Owns the directory layout and the URL signatures. Never serves HTTP itself.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlencode

from vastfleet.errors import BadInput, ChecksumMismatch, Conflict, Forbidden, NotFound
from vastfleet.storage.manifest import SHA256_HEX, sha256_file

BLOB_ROUTE = "/v1/blobs/"


class LocalCheckpointStore:
    def __init__(
        self,
        root: str | Path,
        secret: bytes | str,
        base_url: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._secret = secret.encode() if isinstance(secret, str) else bytes(secret)
        if len(self._secret) < 16:
            raise BadInput("the local checkpoint store's secret must be at least 16 bytes")
        # The API's address as the instances reach it; set later when the port is chosen at start-up.
        self.base_url = base_url.rstrip("/")
        self.clock = clock

    # --- the CheckpointStore protocol ---------------------------------------------------------------

    def presign_put(self, key: str, size: int, sha256: str, expires_s: int = 900) -> str:
        self.path_for(key)  # refuse a bad key now, not when the agent calls
        exp = int(self.clock() + expires_s)
        query = {
            "exp": exp,
            "size": int(size),
            "sha256": sha256,
            "sig": self._sign("PUT", key, exp, int(size), sha256),
        }
        return self._url(key, query)

    def put_headers(self, key: str, size: int, sha256: str) -> dict[str, str]:
        return {"Content-Type": "application/octet-stream"}

    def presign_get(self, key: str, expires_s: int = 900) -> str:
        self.path_for(key)
        exp = int(self.clock() + expires_s)
        return self._url(key, {"exp": exp, "sig": self._sign("GET", key, exp, None, None)})

    def stat(self, key: str) -> tuple[int, str] | None:
        path = self.path_for(key)
        if not path.is_file():
            return None
        return sha256_file(path)

    def delete_prefix(self, prefix: str) -> int:
        base = self.path_for(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if not base.exists():
            return 0
        if base.is_file():
            base.unlink()
            return 1
        count = sum(1 for p in base.rglob("*") if p.is_file())
        if base == self.root:
            for child in base.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        else:
            shutil.rmtree(base)
        return count

    def keys_under(self, prefix: str) -> list[str]:
        base = self.path_for(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)).replace(os.sep, "/") for p in base.rglob("*")
                      if p.is_file() and not p.is_symlink() and not p.name.startswith("."))

    # --- used by the blob routes --------------------------------------------------------------------

    def path_for(self, key: str) -> Path:
        """The file of a key; refuses keys that would leave the root."""
        if not key or key.startswith("/") or "\\" in key or "\x00" in key:
            raise BadInput("bad storage key")
        if any(part in ("", ".", "..") for part in key.split("/")):
            raise BadInput("bad storage key")
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise BadInput("bad storage key")
        return path

    def check_signature(
        self, method: str, key: str, exp: int, sig: str, size: int | None = None, sha256: str | None = None
    ) -> None:
        """Raise Forbidden unless the URL was signed by us for exactly this request and is unexpired."""
        want = self._sign(method, key, exp, size, sha256)
        if not hmac.compare_digest(want, sig):
            raise Forbidden("bad signature on the storage URL")
        if exp < self.clock():
            raise Forbidden("the storage URL has expired; ask the API for a new one")

    def tmp_path(self, key: str) -> Path:
        """A temporary file beside the final one (same filesystem, so the rename is atomic)."""
        final = self.path_for(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        return final.with_name(f".{final.name}.{os.getpid()}.{time.monotonic_ns()}.part")

    def finish_put(self, tmp: Path, key: str, size: int, sha256: str) -> None:
        """Put a fully received upload in place if its bytes are the signed ones and the key holds no other
        bytes yet (objects are write-once: a committed checkpoint cannot be replaced); always drops `tmp`."""
        name = key.rsplit("/", 1)[-1]
        try:
            got_size, got_sha = sha256_file(tmp)
            if got_size != size or got_sha != sha256:
                raise ChecksumMismatch(f"upload of {name!r} does not match its signed size and sha256")
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            final = self.path_for(key)
            try:
                os.link(tmp, final)  # atomic create-if-absent, unlike a rename that replaces
            except FileExistsError:
                if sha256_file(final) != (size, sha256):
                    raise Conflict(f"{name!r} is already stored with other bytes; stored objects are never"
                                   " replaced") from None
        finally:
            tmp.unlink(missing_ok=True)

    def open_for_get(self, key: str) -> Path:
        path = self.path_for(key)
        if not path.is_file():
            raise NotFound("no such checkpoint object")
        return path

    # --- helpers ------------------------------------------------------------------------------------

    def _sign(self, method: str, key: str, exp: int, size: int | None, sha256: str | None) -> str:
        if sha256 is not None and not SHA256_HEX.match(sha256):
            raise BadInput("sha256 must be 64 lowercase hexadecimal characters")
        msg = "\n".join(
            [method.upper(), key, str(int(exp)), "" if size is None else str(int(size)), sha256 or ""]
        )
        return hmac.new(self._secret, msg.encode(), hashlib.sha256).hexdigest()

    def _url(self, key: str, query: dict[str, object]) -> str:
        if not self.base_url:
            raise BadInput("the local checkpoint store has no base URL yet (the API address instances reach)")
        return f"{self.base_url}{BLOB_ROUTE}{quote(key, safe='/')}?{urlencode(query)}"
