"""Workloads in JSON Lines: one job a line.

  {"id": "j1", "submit": 0, "work_hours": 10.0, "ref_dlperf": 80.0, "gpu_name": ["RTX 4090", "RTX 3090"],
   "num_gpus": 1, "deadline": 86400}
`deadline` is seconds after submit (optional). Bad lines raise BadInput naming the line.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from vastfleet.errors import BadInput


@dataclass(frozen=True)
class WorkJob:
    id: str
    submit: float
    work_hours: float
    ref_dlperf: float
    gpu_names: tuple[str, ...]
    num_gpus: int = 1
    deadline: float | None = None  # seconds after submit

    @property
    def deadline_at(self) -> float | None:
        return None if self.deadline is None else self.submit + self.deadline


def parse_workload(lines: list[str], source: str = "workload") -> list[WorkJob]:
    jobs: list[WorkJob] = []
    seen: set[str] = set()
    for no, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            d = json.loads(raw)
            names = d["gpu_name"]
            names = (names,) if isinstance(names, str) else tuple(str(x) for x in names)
            job = WorkJob(id=str(d["id"]), submit=float(d.get("submit", 0)), work_hours=float(d["work_hours"]),
                          ref_dlperf=float(d["ref_dlperf"]), gpu_names=names, num_gpus=int(d.get("num_gpus", 1)),
                          deadline=float(d["deadline"]) if d.get("deadline") is not None else None)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise BadInput(f"{source}:{no}: bad job line ({exc.__class__.__name__}: {exc})") from None
        if not all(math.isfinite(x) for x in (job.submit, job.work_hours, job.ref_dlperf, job.deadline or 1.0)):
            raise BadInput(f"{source}:{no}: submit, work_hours, ref_dlperf and deadline must be finite numbers")
        if job.work_hours <= 0 or job.ref_dlperf <= 0 or job.num_gpus < 1 or not names:
            raise BadInput(f"{source}:{no}: work_hours, ref_dlperf and num_gpus must be positive")
        if job.submit < 0:
            raise BadInput(f"{source}:{no}: submit must be seconds >= 0")
        if job.deadline is not None and job.deadline <= 0:
            raise BadInput(f"{source}:{no}: deadline must be positive seconds after submit")
        if job.id in seen:
            raise BadInput(f"{source}:{no}: job id {job.id!r} appears twice")
        seen.add(job.id)
        jobs.append(job)
    if not jobs:
        raise BadInput(f"{source}: no jobs")
    return sorted(jobs, key=lambda j: (j.submit, j.id))


def load_workload(path: str | Path) -> list[WorkJob]:
    file = Path(path)
    try:
        return parse_workload(file.read_text().splitlines(), file.name)
    except OSError as exc:
        raise BadInput(f"cannot read workload {file}: {exc.strerror}") from None


def write_workload(path: str | Path, jobs: list[WorkJob]) -> None:
    with open(path, "w") as fh:
        fh.writelines(json.dumps({"id": j.id, "submit": j.submit, "work_hours": j.work_hours,
                                 "ref_dlperf": j.ref_dlperf, "gpu_name": list(j.gpu_names),
                                 "num_gpus": j.num_gpus, "deadline": j.deadline}, sort_keys=True) + "\n" for j in jobs)
