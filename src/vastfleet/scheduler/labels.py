"""The instance label that names a job's attempt: `vf:<job id>:<epoch>`.

The label is how the scheduler recognises its own instances after a restart (adoption instead of renting
twice) and the only proof that an instance is ours: an instance without a parseable label is never touched.
Owns the format only; never talks to a marketplace.
"""

from __future__ import annotations

import re

PREFIX = "vf"
_LABEL = re.compile(r"^(?P<prefix>[a-z0-9-]+):(?P<job>j-[a-z0-9]+):(?P<epoch>\d+)$")


def label_for(job_id: str, epoch: int, prefix: str = PREFIX) -> str:
    return f"{prefix}:{job_id}:{int(epoch)}"


def parse_label(label: str | None, prefix: str = PREFIX) -> tuple[str, int] | None:
    """(job id, epoch) for one of our labels; None for anything else (not ours: never touched)."""
    if not label:
        return None
    match = _LABEL.match(label.strip())
    if match is None or match["prefix"] != prefix:
        return None
    return match["job"], int(match["epoch"])
