"""The baseline policies of the benchmark, as the anchors behave:

- on_demand: the cheapest on-demand offer per unit of work, to the end (relaunch only if the host dies).
- greedy_spot: bid exactly min_bid on the cheapest offer; after a preemption relaunch on the cheapest offer;
  wait when none; on demand to the end once the slack no longer covers a restart (Can't Be Late's greedy).
- uniform_progress: spot whenever available; when not, on demand if behind the uniform-progress line
  (work done < elapsed / deadline x work); back to spot when it returns and the job is on the line.
- up_switch: greedy until 70% of the job is done, then Uniform Progress (the paper's appendix fix).
All use a fixed checkpoint interval and the same restart accounting as every online policy.
"""

from __future__ import annotations

import numpy as np

from vastfleet.sim.replay.engine import Action, JobRun, Place, Release, Replay


def job_mask(sim: Replay, run: JobRun) -> np.ndarray:
    m = sim.m
    return np.isin(m.gpu, np.array(run.job.gpu_names, dtype=object)) & (m.num_gpus >= run.job.num_gpus)


def slack(sim: Replay, run: JobRun, now: float, mask: np.ndarray) -> float:
    """Seconds to spare if the rest ran on the fastest on-demand offer after one restart."""
    j = run.job
    if j.deadline_at is None:
        return float("inf")
    speed = float((sim.m.dlperf[mask] / j.ref_dlperf).max()) if mask.any() else 1.0
    rem = (j.work_hours - sim.progress(run, now)) * 3600.0 / speed
    return j.deadline_at - now - sim.o.restart_overhead_s - rem


class Baseline:
    name = "baseline"

    def __init__(self, ckpt_interval_s: float = 1800.0, spot_below_od: bool = False) -> None:
        self.tau = ckpt_interval_s
        self.final_od: set[str] = set()
        # a bid counts as spot only below the offer's on-demand price (a cloud zone without spot capacity carries a
        # competing bid at that price): the published settings' "spot available"
        self.spot_below_od = spot_below_od

    def tight(self, sim: Replay, run: JobRun, now: float, mask: np.ndarray) -> bool:
        # one more restart must still fit (plus one tick of reaction time)
        return slack(sim, run, now, mask) <= sim.o.restart_overhead_s + sim.m.tick

    def cheapest(self, sim: Replay, k: int, run: JobRun, mask: np.ndarray, kind: str) -> Place | None:
        avail = sim.available(k) & mask
        if kind == "bid" and self.spot_below_od:
            avail &= sim.eff(k) < sim.m.dph[k] * (1 - 1e-9)
        if not avail.any():
            return None
        speed = sim.m.dlperf / run.job.ref_dlperf
        price = sim.eff(k) if kind == "bid" else sim.m.dph[k]
        per_work = np.where(avail, price / speed, np.inf)
        i = int(np.argmin(per_work))
        return Place(run.job.id, i, kind, float(price[i]) if kind == "bid" else 0.0, self.tau)  # type: ignore[arg-type]

    def step(self, sim: Replay, k: int, now: float) -> list[Action]:
        acts: list[Action] = []
        for run in sim.active():
            acts.extend(self.decide(sim, k, now, run, job_mask(sim, run)))
        return acts

    def decide(self, sim: Replay, k: int, now: float, run: JobRun, mask: np.ndarray) -> list[Action]:
        raise NotImplementedError

    def go_od(self, sim: Replay, k: int, run: JobRun, mask: np.ndarray) -> list[Action]:
        p = self.cheapest(sim, k, run, mask, "on_demand")
        if p is None:
            return []
        self.final_od.add(run.job.id)
        out: list[Action] = []
        if run.rental is not None:
            out.append(Release(run.job.id, graceful=not run.rental.paused))
        return out + [p]


class OnDemand(Baseline):
    name = "on_demand"

    def decide(self, sim: Replay, k: int, now: float, run: JobRun, mask: np.ndarray) -> list[Action]:
        if run.rental is None:
            p = self.cheapest(sim, k, run, mask, "on_demand")
            return [p] if p else []
        return []


class GreedySpot(Baseline):
    name = "greedy_spot"

    def decide(self, sim: Replay, k: int, now: float, run: JobRun, mask: np.ndarray) -> list[Action]:
        r = run.rental
        if r is not None and r.kind == "on_demand":
            return []
        if r is not None and not r.paused:
            return []
        if self.tight(sim, run, now, mask):
            return self.go_od(sim, k, run, mask)
        p = self.cheapest(sim, k, run, mask, "bid")
        out: list[Action] = [Release(run.job.id)] if r is not None else []
        return out + [p] if p else out


class UniformProgress(Baseline):
    name = "uniform_progress"

    def behind(self, sim: Replay, run: JobRun, now: float) -> bool:
        j = run.job
        if j.deadline is None:
            return False
        line = (now - j.submit) / j.deadline * j.work_hours
        return sim.progress(run, now) < line

    def decide(self, sim: Replay, k: int, now: float, run: JobRun, mask: np.ndarray) -> list[Action]:
        r = run.rental
        jid = run.job.id
        if jid in self.final_od:
            return [] if r is not None else self.go_od(sim, k, run, mask)
        if self.tight(sim, run, now, mask):
            if r is not None and r.kind == "on_demand":
                self.final_od.add(jid)
                return []
            return self.go_od(sim, k, run, mask)
        if r is not None and r.kind == "bid" and not r.paused:
            return []
        spot = self.cheapest(sim, k, run, mask, "bid")
        if r is not None and r.kind == "on_demand":
            # back to spot when it is there and the job is on the line (one changeover of slack to spare)
            if spot is not None and not self.behind(sim, run, now) and \
                    slack(sim, run, now, mask) > 3 * sim.o.restart_overhead_s + sim.m.tick:
                return [Release(jid, graceful=True), spot]
            return []
        out: list[Action] = [Release(jid)] if r is not None else []
        if spot is not None:
            return out + [spot]
        if self.behind(sim, run, now):
            p = self.cheapest(sim, k, run, mask, "on_demand")
            return out + [p] if p else out
        return out


class UPSwitch(UniformProgress):
    name = "up_switch"

    def __init__(self, ckpt_interval_s: float = 1800.0, switch_at: float = 0.7) -> None:
        super().__init__(ckpt_interval_s)
        self.greedy = GreedySpot(ckpt_interval_s)
        self.switch_at = switch_at

    def decide(self, sim: Replay, k: int, now: float, run: JobRun, mask: np.ndarray) -> list[Action]:
        if sim.progress(run, now) < self.switch_at * run.job.work_hours and run.job.id not in self.final_od:
            acts = self.greedy.decide(sim, k, now, run, mask)
            if run.job.id in self.greedy.final_od:
                self.final_od.add(run.job.id)
            return acts
        return super().decide(sim, k, now, run, mask)
