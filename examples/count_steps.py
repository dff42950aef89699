"""vastfleet example job: count to N steps, checkpointing every K steps (standard library only).

Each step prints `STEP n`, appends n to $VASTFLEET_WORKDIR/steps.log (lost with the instance) and
records n in the job's state, which every checkpoint carries: the committed checkpoint's `counted` list
is the steps counted along the lineage that survived, so across preemptions it must read 1..N once each.
A checkpoint is a directory written atomically: temp dir -> fsync -> rename to step-<n>.
Usage: python3 count_steps.py [--steps N] [--every K] [--sleep S]
"""

import argparse
import json
import os
import shutil
import time

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=60)
p.add_argument("--every", type=int, default=10)
p.add_argument("--sleep", type=float, default=0.2)
a = p.parse_args()
ckpt = os.environ.get("VASTFLEET_CKPT_DIR", "ckpt")
work = os.environ.get("VASTFLEET_WORKDIR", ".")
control = os.environ.get("VASTFLEET_CONTROL_FILE", "")
attempt = os.environ.get("VASTFLEET_ATTEMPT", "0")
os.makedirs(ckpt, exist_ok=True)

state = {"step": 0, "counted": [], "attempts": []}
if os.environ.get("VASTFLEET_RESUME") == "1":
    with open(os.path.join(os.environ["VASTFLEET_RESUME_DIR"], "state.json")) as fh:
        state = json.load(fh)
    print(f"RESUME from step {state['step']}", flush=True)
state["attempts"].append({"attempt": attempt, "from": state["step"]})


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint():
    final = os.path.join(ckpt, f"step-{state['step']:08d}")
    if os.path.exists(final):
        return
    tmp = os.path.join(ckpt, f".step-{state['step']:08d}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    with open(os.path.join(tmp, "state.json"), "w") as fh:
        json.dump(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(tmp)
    os.rename(tmp, final)
    fsync_dir(ckpt)
    print(f"CHECKPOINT step {state['step']}", flush=True)


def requests():
    """How many times the control plane asked for a checkpoint now (the agent's control file)."""
    try:
        with open(control) as fh:
            return int(json.load(fh).get("checkpoint_requested", 0))
    except (OSError, ValueError):
        return 0


seen = requests()
while state["step"] < a.steps:
    time.sleep(a.sleep)
    state["step"] += 1
    state["counted"].append(state["step"])
    print(f"STEP {state['step']}", flush=True)
    with open(os.path.join(work, "steps.log"), "a") as fh:
        fh.write(f"{state['step']}\n")
    progress = os.environ.get("VASTFLEET_PROGRESS_FILE")
    if progress:
        with open(progress + ".tmp", "w") as fh:
            json.dump({"step": state["step"], "of": a.steps}, fh)
        os.replace(progress + ".tmp", progress)
    asked = requests()
    if state["step"] % a.every == 0 or asked > seen:
        seen = asked
        checkpoint()
checkpoint()
print(f"DONE {state['step']} steps", flush=True)
