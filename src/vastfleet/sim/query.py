"""vast's query language on the server side: filter rows by the parsed query dict, order and limit them.

The client (`vastai/api/query.py`) sends `{"field": {"op": value}}` with values as strings ("1", "0.98",
"RTX 4090"), booleans, None, floats already multiplied (gpu_ram in MB), lists for in/notin, and driver
versions as 535086005. This module coerces each value to the type of the row's field and compares. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from vastfleet.sim.catalog import numeric_driver
from vastfleet.sim.entities import SimError

OPS = ("eq", "neq", "gt", "gte", "lt", "lte", "in", "notin", "nin")
# keys of a search body that are not filters
CONTROL_KEYS = {"order", "type", "limit", "allocated_storage", "disable_bundling", "extra_ids", "select_cols"}
_TRUE = {"true", "1", "yes", "t"}
_FALSE = {"false", "0", "no", "f", "none", "null", ""}


def _coerce(value: Any, like: Any, field: str) -> Any:
    if value is None:
        return None
    if field == "driver_version":
        if isinstance(value, str) and "." in value:
            return numeric_driver(value)
        return float(value)
    if isinstance(like, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"{field}: expected true or false, got {value!r}")
    if isinstance(like, (int, float)):
        return float(value)
    return str(value).strip().lower()


def _row_value(row: dict[str, Any], field: str) -> Any:
    value = row.get(field)
    if field == "driver_version" and isinstance(value, str):
        return numeric_driver(value)
    if isinstance(value, str):
        return value.strip().lower()
    return value


def _geo_matches(row_value: Any, wanted: Any) -> bool:
    """`geolocation=US` matches "California, US": vast compares the country code as well."""
    if row_value is None or wanted is None:
        return bool(row_value == wanted)
    text = str(row_value).lower()
    want = str(wanted).strip().lower()
    return text == want or text.rsplit(",", 1)[-1].strip() == want


def check(row: dict[str, Any], field: str, op: str, value: Any) -> bool:
    if op not in OPS:
        raise SimError(400, "invalid_args", f"Unknown operator {op!r} for field {field!r}.")
    raw = row.get(field)
    have = _row_value(row, field)
    try:
        if op in ("in", "notin", "nin"):
            values = value if isinstance(value, list) else [value]
            if field == "geolocation":
                hit = any(_geo_matches(raw, v) for v in values)
            else:
                hit = any(have == _coerce(v, raw, field) for v in values)
            return hit if op == "in" else not hit
        want = _coerce(value, raw, field)
    except (TypeError, ValueError) as exc:
        raise SimError(400, "invalid_args", f"Bad value for {field}: {exc}") from None
    if op in ("eq", "neq"):
        same = _geo_matches(raw, value) if field == "geolocation" else have == want
        return bool(same) if op == "eq" else not same
    if have is None or want is None:
        return False
    try:
        if op == "gt":
            return bool(have > want)
        if op == "gte":
            return bool(have >= want)
        if op == "lt":
            return bool(have < want)
        return bool(have <= want)
    except TypeError:
        raise SimError(400, "invalid_args", f"{field} cannot be compared with {op}.") from None


def matches(row: dict[str, Any], filters: dict[str, Any], known: Iterable[str] | None = None) -> bool:
    known_set = set(known) if known is not None else None
    for field, cond in filters.items():
        if field in CONTROL_KEYS:
            continue
        if known_set is not None and field not in known_set:
            raise SimError(400, "invalid_args", f"Unknown field {field!r} in query.")
        if not isinstance(cond, dict):
            cond = {"eq": cond}
        for op, value in cond.items():
            if not check(row, field, op, value):
                return False
    return True


def order_rows(rows: list[dict[str, Any]], order: Any) -> list[dict[str, Any]]:
    """Sort by `[["dph_total", "asc"], ...]` or `[{"col": ..., "dir": ...}]`; None sorts last either way."""
    keys: list[tuple[str, bool]] = []
    for item in order or []:
        if isinstance(item, dict):
            field, direction = item.get("col"), item.get("dir", "asc")
        elif isinstance(item, (list, tuple)) and item:
            field, direction = item[0], (item[1] if len(item) > 1 else "asc")
        else:
            field, direction = str(item), "asc"
        if field:
            keys.append((str(field), str(direction).lower().startswith("desc")))
    out = list(rows)
    for field, desc in reversed(keys):
        present = [r for r in out if r.get(field) is not None]
        missing = [r for r in out if r.get(field) is None]
        present.sort(key=lambda r: _sort_key(r.get(field)), reverse=desc)
        out = present + missing
    return out


def _sort_key(value: Any) -> Any:
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, (int, float)):
        return (0, value)
    return (1, str(value).lower())
