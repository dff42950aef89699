"""How long checkpoint uploads take, as the control plane sees them: from the first presigned PUT URL
handed out for a checkpoint's prefix to the commit of that checkpoint. Feeds the exporter and the
Young/Daly checkpoint cost; knows nothing of either."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class UploadTimer:
    MAX_OPEN = 10_000  # prefixes presigned but never committed (an agent died mid-upload) are forgotten

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._first: dict[str, float] = {}  # object key -> first presign time
        self._lock = threading.Lock()

    def watch(self, ckpt: Any) -> Any:
        """Wrap `presign_put` on this store instance (its class is kept, so isinstance checks still hold)."""
        inner = ckpt.presign_put

        def presign_put(key: str, *args: Any, **kwargs: Any) -> str:
            with self._lock:
                if len(self._first) >= self.MAX_OPEN:
                    self._first.clear()
                self._first.setdefault(key, self.clock())
            return inner(key, *args, **kwargs)  # type: ignore[no-any-return]

        ckpt.presign_put = presign_put
        return ckpt

    def started(self, prefix: str) -> float | None:
        """The first presign time under `prefix`, forgetting the prefix's keys; None when none was seen."""
        with self._lock:
            times = [self._first.pop(k) for k in [k for k in self._first if k.startswith(prefix)]]
        return min(times) if times else None
