"""Durations and points in time as users write them: `90`, `90s`, `15m`, `12h`, `2d`, `1h30m`, ISO 8601."""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone

from vastfleet.spec.limits import show as _show

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
# Ten years: far beyond any deadline or checkpoint interval, and small enough that "now + duration" stays
# a time every datetime and JSON writer can handle (1e300 s would overflow them far from here).
MAX_DURATION_S = 3650 * 86400.0


def parse_duration(value: object) -> float:
    """Seconds from a number (seconds) or a string such as `1h30m`; raises ValueError with a hint."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string such as '90s', '15m', '12h', '2d'")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        else:
            parts = _PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(
                    f"{_show(value)} is not a duration; use seconds or units s, m, h, d, w (e.g. '90s', '1h30m', '2d')"
                )
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    else:
        raise ValueError("a duration is a number of seconds or a string such as '90s', '15m', '12h', '2d'")
    # NaN compares false with everything, so it would slip past the checks below: test it first.
    if not math.isfinite(seconds):
        raise ValueError("a duration must be a finite number of seconds (not NaN or infinity)")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"a duration must be at most {MAX_DURATION_S / 86400:.0f}d (ten years)")
    return seconds


def parse_time(value: str) -> float:
    """Epoch seconds from an ISO 8601 time; a time without a zone is read as UTC."""
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{_show(value)} is neither a duration nor an ISO 8601 time") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def format_duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    out = "".join(f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")) if v)
    return out
