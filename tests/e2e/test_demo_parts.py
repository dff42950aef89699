"""The demo's live table and its count of preemptions (issue 16), on jobs and event histories as the store
holds them: plain text cells (a reason with `[/x]` prints as it is), columns that keep their width from frame
to frame, never a step below the committed checkpoint, and each preemption counted by where it came from
and how it was survived."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from vastfleet.demo import live_table, preemption_kinds
from vastfleet.spec import job_spec_from_dict
from vastfleet.spec.job import CheckpointRef, Job, JobEvent, JobState

S = JobState
SPEC = job_spec_from_dict({"name": "count", "image": "python:3.11-slim", "run": "true",
                           "resources": {"gpu": ["RTX_4090"]}})


def job(job_id: str, state: JobState, *, step: int | None = None, ckpt: int | None = None, reason: str = "",
        epoch: int = 1, instance: int | None = 20000001) -> Job:
    ref = None if ckpt is None else CheckpointRef(epoch=epoch, step=ckpt, prefix="p/", files={}, committed_at=1.0)
    return Job(id=job_id, spec=SPEC, state=state, epoch=epoch, submitted_at=0.0, updated_at=0.0, reason=reason,
               instance_id=instance, progress={} if step is None else {"step": step, "of": 60},
               latest_checkpoint=ref)


def render(jobs: list[Job], wide: bool = True) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=160, color_system=None).print(live_table(jobs, "frame", wide=wide))
    return out.getvalue().splitlines()


def test_a_reason_with_markup_prints_as_it_is() -> None:
    lines = render([job("j-aaaaaaaaaa", S.RUNNING, step=3, reason="create failed: [/x] offer [bold]gone")])
    assert any("create failed: [/x] offer [bold]gone" in line for line in lines)


def test_columns_keep_their_width_from_frame_to_frame() -> None:
    first = render([job("j-aaaaaaaaaa", S.PENDING, reason="submitted", instance=None),
                    job("j-bbbbbbbbbb", S.BOOTING, reason="x", instance=7)])
    later = render([job("j-aaaaaaaaaa", S.INTERRUPTED, step=60, ckpt=60, epoch=12, instance=20000123,
                        reason="a much longer reason than the first frame had, cut to the column " * 3),
                    job("j-bbbbbbbbbb", S.SUCCEEDED, step=60, ckpt=60, instance=20000002, reason="done")])
    assert [len(line) for line in first] == [len(line) for line in later]
    header = next(i for i, line in enumerate(first) if "state" in line)
    assert first[header] == later[header]


def test_the_step_shown_is_never_below_the_committed_checkpoint() -> None:
    resumed = job("j-aaaaaaaaaa", S.RUNNING, step=0, ckpt=15, epoch=2)
    booting = job("j-bbbbbbbbbb", S.BOOTING, step=None, ckpt=30, epoch=3)
    lines = render([resumed, booting], wide=False)
    row = {line.split()[1]: line for line in lines if line.startswith("│ j-")}
    assert "15/60" in row["j-aaaaaaaaaa"] and " 0/60" not in row["j-aaaaaaaaaa"]
    assert "30/60" in row["j-bbbbbbbbbb"]


def event(at: float, to: JobState, epoch: int, reason: str, **data: Any) -> JobEvent:
    return JobEvent(job_id="j", at=at, kind="transition", to_state=to, epoch=epoch, reason=reason, data=data)


def test_preemptions_are_counted_by_kind_and_by_how_they_were_survived() -> None:
    history = [
        event(1, S.BOOTING, 1, "instance 101", instance_id=101), event(2, S.RUNNING, 1, "agent claimed"),
        # injected: the demo preempted instance 101 at t=2.5
        event(3, S.PAUSED, 1, "paused by a rival bid 1s ago; moving to a new offer: move"),
        event(3.1, S.INTERRUPTED, 1, "outbid: instance stopped (outbid) and agent silent"),
        event(3.2, S.PENDING, 1, "re-queued from checkpoint step 5 (epoch 1)"),
        event(4, S.BOOTING, 2, "instance 102", instance_id=102), event(5, S.RUNNING, 2, "agent claimed"),
        # the market's own rival bid, survived in place by a re-bid
        event(6, S.PAUSED, 2, "paused by a rival bid 1s ago; re-bid at $0.070/h: raise"),
        event(7, S.RUNNING, 2, "resumed: the agent heartbeats again"),
        # then its host went offline: moved
        event(8, S.INTERRUPTED, 2, "host_offline: the host is offline"),
        event(8.1, S.PENDING, 2, "re-queued from checkpoint step 20 (epoch 2)"),
        event(9, S.BOOTING, 3, "instance 103", instance_id=103), event(10, S.RUNNING, 3, "agent claimed"),
        event(11, S.SUCCEEDED, 3, "command exited with 0"),
    ]
    counted = preemption_kinds({"j": history}, [("j", 101, 2.5)])
    assert counted == {"preemptions_injected": 1, "preemptions_from_market": 2,
                       "market_causes": {"rival bid": 1, "host offline": 1}, "survived_by_moving": 2,
                       "survived_in_place": 1, "preemptions_survived": 3}
    failed = history[:5] + [event(6, S.FAILED, 1, "21 interruptions, past the cap of 20")]
    assert preemption_kinds({"j": failed}, [("j", 101, 2.5)])["preemptions_survived"] == 0
