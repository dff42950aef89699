"""Checkpoint cadence by Young/Daly: interval ~ sqrt(2 * checkpoint cost * mean time between interruptions).

Pure arithmetic; the live loop sends the result to the agent, the benchmark uses it for `ours`.
"""

from __future__ import annotations

import math

DEFAULT_CHECKPOINT_COST_S = 60.0  # until the job's first upload is measured


def checkpoint_interval(checkpoint_cost_s: float | None, hazard_per_hour: float, *, min_s: float = 300.0,
                        max_s: float = 4 * 3600.0) -> float:
    """Seconds between checkpoints (cost None: not measured yet, `DEFAULT_CHECKPOINT_COST_S`). A zero hazard
    gives the cap (checkpoint rarely, but still checkpoint)."""
    if checkpoint_cost_s is None:
        checkpoint_cost_s = DEFAULT_CHECKPOINT_COST_S
    if hazard_per_hour <= 0:
        return max_s
    mtbi_s = 3600.0 / hazard_per_hour
    interval = math.sqrt(2.0 * max(checkpoint_cost_s, 0.0) * mtbi_s)
    return min(max(interval, min_s), max_s)
