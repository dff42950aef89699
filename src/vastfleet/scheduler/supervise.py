"""Supervision: what one attempt's two witnesses say about it, as an ordered rule table (first match wins).

The witnesses are the marketplace's instance row (`actual_status`, `cur_state`, presence in the listing)
and the agent's last heartbeat of the job's current epoch. The marketplace's statuses disagree with the
truth at times (`stopped` while the container runs, a destroyed instance showing as stopped), so no single
field decides alone. Two witnesses: when the marketplace says paused, offline, exited or gone AND the agent
has missed two heartbeats, the attempt is lost (or paused) at that pass; an agent silent on an instance the
marketplace calls running waits the full `heartbeat_lost_s` (a partition, not a loss); one witness silent
past a bound (boot timeout, stuck scheduling) decides alone.

Verdicts:
    healthy      the attempt runs (fresh heartbeat, or the marketplace shows it running inside the bounds)
    booting      the attempt is being created or is loading; no heartbeat yet, inside the boot bound
    interrupted  the attempt is lost or paused; `cause` says how (recovery decides: wait, raise bid, re-queue;
                 a paused RUNNING attempt reads PAUSED while it decides)
    dead         the job is over (terminal) and this is its leftover instance: tear it down (teardown rule)
    orphan       ours by label, but no live attempt claims it (stale epoch, unknown job, duplicate, or the
                 recovery already moved the job off it): destroy it

Pure: no I/O, time is an argument. Never decides what to do about a verdict (that is `plan`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from vastfleet.spec.job import Job, JobState
from vastfleet.spec.market import Instance


class Health(str, Enum):
    healthy = "healthy"
    booting = "booting"
    interrupted = "interrupted"
    dead = "dead"
    orphan = "orphan"


class Cause(str, Enum):
    outbid = "outbid"  # an interruptible instance paused by a higher bid (stopped/scheduling, is_bid)
    paused = "paused"  # stopped by someone else (not a bid instance): treated like outbid
    stuck_scheduling = "stuck_scheduling"  # paused/scheduling past the bound: the GPU is not coming back
    host_offline = "host_offline"  # actual_status offline and the agent is silent
    exited = "exited"  # the container exited (or is `unknown`) without the agent reporting an exit code
    heartbeat_lost = "heartbeat_lost"  # the marketplace says running but the agent is silent
    boot_timeout = "boot_timeout"  # no first heartbeat within the boot bound
    gone = "gone"  # the listing no longer shows the attempt's instance and the agent is silent
    moved = "moved"  # the policy moved the attempt (cheaper offer, on demand for a deadline, back to bids)

    @property
    def blames_host(self) -> bool:
        """The one place that says which losses are the host's doing (it is then left out for a while);
        outbid, paused, stuck scheduling and gone are the market's. A job's own failure is never a Cause: the
        agent reports it as the job's, and it counts against `retries_on_error`."""
        return self in (Cause.host_offline, Cause.exited, Cause.heartbeat_lost, Cause.boot_timeout)

    @property
    def lost_on_host(self) -> bool:
        """A loss the host's hazard learns from (not a pause of our bid: that is the auction's)."""
        return self in (Cause.host_offline, Cause.gone, Cause.heartbeat_lost, Cause.exited)


@dataclass(frozen=True)
class PendingCheckpoint:
    step: int
    dir: str  # its directory's name under the instance's checkpoint directory
    digest: str  # the manifest's digest: the storage key a verified copy is committed under
    files: int
    bytes: int


@dataclass(frozen=True)
class Beat:
    """The agent's last heartbeat, as supervision needs it."""

    at: float
    epoch: int
    instance_id: int | None = None
    pending_uploads: int | None = None  # checkpoints written on the instance but not yet committed; None = unknown
    pending: PendingCheckpoint | None = None  # the newest of them, as the agent hashed it (what salvage copies)


@dataclass(frozen=True)
class Timings:
    """Supervision bounds in seconds. Production defaults; tests pass small ones."""

    heartbeat_lost_s: float = 60.0  # agent silent this long while the marketplace says running: lost
    heartbeat_interval_s: float = 5.0  # what the agents are told; two missed beats + a loss status = lost
    missed_beats: float = 2.0  # heartbeats missed before a loss status is believed (then one pass decides)
    boot_timeout_s: float = 900.0  # image pull + agent start; fat images take minutes
    scheduling_timeout_s: float = 600.0  # a paused bid waits this long before we give up on its GPU
    gone_grace_s: float = 30.0  # a fresh attempt may be missing from the listing this long


@dataclass(frozen=True)
class Verdict:
    health: Health
    reason: str
    cause: Cause | None = None
    rule: str = ""


@dataclass(frozen=True)
class Observation:
    job: Job | None  # None: the label names a job we do not know
    instance: Instance | None  # None: the attempt's instance is absent from a SUCCESSFUL listing
    label_epoch: int | None  # the epoch the instance's label names (None when instance is None)
    beat: Beat | None
    now: float
    timings: Timings = field(default_factory=Timings)

    # --- derived witnesses ----------------------------------------------------------------------------

    @property
    def current_beat(self) -> Beat | None:
        """The heartbeat only if it belongs to the job's current epoch (a stale agent's beat counts for nothing)."""
        if self.job is None or self.beat is None or self.beat.epoch != self.job.epoch:
            return None
        if self.beat.instance_id is not None and self.job.instance_id is not None \
                and self.beat.instance_id != self.job.instance_id:
            return None
        return self.beat

    @property
    def beat_age(self) -> float | None:
        beat = self.current_beat
        return None if beat is None else self.now - beat.at

    @property
    def fresh(self) -> bool:
        age = self.beat_age
        return age is not None and age <= self.timings.heartbeat_lost_s

    @property
    def missed(self) -> bool:
        """The agent missed two heartbeats (the second witness of a loss the marketplace reports); an attempt
        with no heartbeat of its own has no agent to wait for."""
        age = self.beat_age
        bound = min(self.timings.missed_beats * self.timings.heartbeat_interval_s, self.timings.heartbeat_lost_s)
        return age is None or age > bound

    @property
    def silent_for(self) -> float:
        """How long the agent has been silent: since its last beat, else since the job entered its state."""
        age = self.beat_age
        if age is not None:
            return age
        assert self.job is not None
        return self.now - self.job.updated_at

    @property
    def status(self) -> str:
        inst = self.instance
        return (inst.actual_status or "").lower() if inst is not None else ""

    @property
    def intended_stopped(self) -> bool:
        return self.instance is not None and (self.instance.intended_status or "").lower() == "stopped"

    @property
    def paused_status(self) -> bool:
        inst = self.instance
        if inst is None:
            return False
        return self.status in ("stopped", "scheduling", "frozen") or (
            self.status in ("", "created") and (inst.cur_state or "").lower() == "stopped"
            and (inst.intended_status or "running").lower() == "running"
        )


Predicate = Callable[[Observation], bool]
Make = Callable[[Observation], Verdict]


@dataclass(frozen=True)
class Rule:
    name: str
    when: Predicate
    then: Make


def _job(o: Observation) -> Job:
    assert o.job is not None
    return o.job


def _v(health: Health, reason: str, cause: Cause | None = None) -> Make:
    return lambda o: Verdict(health, reason, cause)


def _paused_cause(o: Observation) -> Verdict:
    assert o.instance is not None
    if _job(o).state == JobState.BOOTING and o.intended_stopped:
        return Verdict(Health.interrupted, "created stopped (a bid below the offer's minimum?): it will not start",
                       Cause.stuck_scheduling)
    if o.silent_for > o.timings.scheduling_timeout_s:
        return Verdict(Health.interrupted, f"paused ({o.status or 'stopped'}) for {o.silent_for:.0f}s, past the"
                       f" {o.timings.scheduling_timeout_s:.0f}s bound", Cause.stuck_scheduling)
    cause = Cause.outbid if o.instance.is_bid else Cause.paused
    return Verdict(Health.interrupted, f"instance {o.status or 'stopped'} ({cause.value}) and agent silent", cause)


_PARKED = (JobState.PENDING, JobState.INTERRUPTED)

# The table. Order matters: ownership first, then the job's own state, then the losses by how sure we are.
RULES: tuple[Rule, ...] = (
    Rule("unknown-job", lambda o: o.job is None, _v(Health.orphan, "no job of ours claims this instance")),
    Rule("stale-epoch",
         lambda o: o.instance is not None and o.label_epoch is not None and o.label_epoch != _job(o).epoch,
         lambda o: Verdict(Health.orphan, f"attempt {o.label_epoch} is over (the job is at epoch {_job(o).epoch})")),
    Rule("duplicate",
         lambda o: o.instance is not None and _job(o).instance_id is not None
         and o.instance.id != _job(o).instance_id,
         lambda o: Verdict(Health.orphan, f"the attempt runs on instance {_job(o).instance_id}, not this one")),
    Rule("job-over", lambda o: _job(o).state.terminal,
         lambda o: Verdict(Health.dead, f"the job is {_job(o).state.value}")),
    Rule("attempt-abandoned", lambda o: o.instance is not None and _job(o).state in _PARKED,
         lambda o: Verdict(Health.orphan, f"the job was moved off this attempt ({_job(o).state.value})")),
    Rule("parked", lambda o: _job(o).state in _PARKED, _v(Health.booting, "no attempt in progress")),
    Rule("placing", lambda o: _job(o).state == JobState.PLACING, _v(Health.booting, "the instance is being created")),
    # From here the job is BOOTING, RUNNING or PAUSED.
    Rule("listing-lags", lambda o: o.instance is None and not o.missed,
         _v(Health.healthy, "absent from the listing but the agent heartbeats")),
    Rule("not-yet-listed", lambda o: o.instance is None and o.now - _job(o).updated_at <= o.timings.gone_grace_s,
         _v(Health.booting, "not listed yet")),
    Rule("gone", lambda o: o.instance is None,
         _v(Health.interrupted, "the instance is gone from the listing and the agent is silent", Cause.gone)),
    Rule("host-offline", lambda o: o.status == "offline" and o.missed,
         _v(Health.interrupted, "host offline and agent silent", Cause.host_offline)),
    Rule("exited", lambda o: o.status in ("exited", "unknown") and o.missed,
         lambda o: Verdict(Health.interrupted, f"container {o.status} without an exit report"
                           + (f" ({o.instance.status_msg})" if o.instance and o.instance.status_msg else ""),
                           Cause.exited)),
    # PAUSED: back to RUNNING once the agent beats after the pause; while the instance shows running again
    # but its agent has not come back yet, it is resuming (bounded like a boot).
    Rule("resumed", lambda o: _job(o).state == JobState.PAUSED and o.current_beat is not None
         and o.current_beat.at > (_job(o).paused_at or 0.0), _v(Health.healthy, "resumed: the agent heartbeats again")),
    # A booting attempt may sit in `scheduling` a moment while the host hands it the GPUs: only the bound
    # ends it; a running one that shows paused was outbid (or stopped), and recovery decides.
    Rule("paused", lambda o: o.paused_status and o.missed and (
        _job(o).state in (JobState.RUNNING, JobState.PAUSED) or o.silent_for > o.timings.scheduling_timeout_s
        or o.intended_stopped), _paused_cause),
    Rule("resuming", lambda o: _job(o).state == JobState.PAUSED
         and o.now - (_job(o).paused_at or _job(o).updated_at) <= o.timings.boot_timeout_s,
         lambda o: Verdict(Health.booting, f"resuming ({o.status or 'listed'}): waiting for the agent")),
    Rule("resume-timeout", lambda o: _job(o).state == JobState.PAUSED,
         lambda o: Verdict(Health.interrupted, f"no heartbeat {o.now - (_job(o).paused_at or 0.0):.0f}s after the"
                           " pause ended", Cause.heartbeat_lost)),
    Rule("boot-timeout",
         lambda o: _job(o).state == JobState.BOOTING and o.current_beat is None
         and o.silent_for > o.timings.boot_timeout_s,
         lambda o: Verdict(Health.interrupted, f"no heartbeat {o.silent_for:.0f}s after creation"
                           f" (bound {o.timings.boot_timeout_s:.0f}s)", Cause.boot_timeout)),
    Rule("booting", lambda o: _job(o).state == JobState.BOOTING and o.current_beat is None,
         lambda o: Verdict(Health.booting, f"loading ({o.status or 'created'})")),
    Rule("heartbeat-lost", lambda o: not o.fresh,
         lambda o: Verdict(Health.interrupted, f"no heartbeat for {o.silent_for:.0f}s while the marketplace says"
                           f" {o.status or 'nothing'}", Cause.heartbeat_lost)),
    Rule("healthy", lambda o: True, _v(Health.healthy, "running and heartbeating")),
)


def supervise(obs: Observation) -> Verdict:
    """The first rule of the table that matches."""
    for rule in RULES:
        if rule.when(obs):
            verdict = rule.then(obs)
            return Verdict(verdict.health, verdict.reason, verdict.cause, rule.name)
    raise AssertionError("the table ends with a catch-all")  # pragma: no cover
