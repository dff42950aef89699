"""Dollars as people read them, one way everywhere: spend as `$0.00066` or `$12.34`, prices as `$0.064/h`.

Why not a fixed number of decimals: a demo job's spend is a fraction of a cent, and `$0.00` for a job that
cost something reads as free; a marketplace price differs from the next one in its third significant digit.
"""

from __future__ import annotations

import math


def format_usd(amount: float, digits: int = 2) -> str:
    """At least cents, and `digits` significant digits below a dollar, so no spend reads as zero."""
    if not math.isfinite(amount):
        return "-"
    sign, value = ("-" if amount < 0 else ""), abs(amount)
    if value == 0:
        return "$0.00"
    if value >= 1:
        return f"{sign}${value:,.2f}"
    decimals = max(2, digits - 1 - math.floor(math.log10(value)))
    return f"{sign}${value:.{decimals}f}"


def format_price(per_hour: float | None) -> str:
    """A price per hour: `$0.064/h` (two significant digits under $0.10, three decimals to a dollar)."""
    if per_hour is None or not math.isfinite(per_hour):
        return "-"
    if per_hour >= 1:
        return f"${per_hour:,.2f}/h"
    if per_hour >= 0.1:
        return f"${per_hour:.3f}/h"
    return f"{format_usd(per_hour)}/h"
