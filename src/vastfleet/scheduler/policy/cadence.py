"""Checkpoint cadence by Young/Daly: interval ~ sqrt(2 * checkpoint cost * mean time between interruptions).

Pure arithmetic; the live loop sends the result to the agent, the benchmark uses it for `ours`.
"""

from __future__ import annotations

import math


def checkpoint_interval(checkpoint_cost_s: float, hazard_per_hour: float, *, min_s: float = 300.0,
                        max_s: float = 4 * 3600.0) -> float:
    """Seconds between checkpoints. A zero hazard gives the cap (checkpoint rarely, but still checkpoint)."""
    if hazard_per_hour <= 0:
        return max_s
    mtbi_s = 3600.0 / hazard_per_hour
    interval = math.sqrt(2.0 * max(checkpoint_cost_s, 0.0) * mtbi_s)
    return min(max(interval, min_s), max_s)
