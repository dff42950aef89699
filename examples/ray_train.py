"""vastfleet example: a Ray Train V2 data-parallel run (2 CPU workers, a tiny linear model in numpy) that
resumes after a preemption from Ray's own last checkpoint.

What makes it resume (docs/ray.md): `RunConfig(storage_path=$VASTFLEET_RAY_STORAGE, name=$VASTFLEET_RAY_NAME)`.
The agent turns each new Ray Train snapshot into a vastfleet checkpoint and restores it to the same path on
the next instance, where `ray.train.get_checkpoint()` hands the workers the last one. Each checkpoint's
`state.json` carries `counted`, every step along the surviving lineage: across preemptions it reads 1..N.
The workers average their gradients every step through a small actor (the all-reduce of a run without torch).
`--weights-mb M` adds M MB of stand-in weights to each checkpoint (what a real model would weigh).
Usage (under vastfleet, `runtime: ray`): python3 ray_train.py [--steps N] [--every K] [--sleep S] [--workers W]
  [--weights-mb M]
"""

import argparse
import asyncio
import json
import os
import tempfile
import time

import numpy as np
import ray
import ray.train
from ray.train import Checkpoint, CheckpointConfig, RunConfig, ScalingConfig, UserCallback
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer


class VastfleetProgress(UserCallback):
    """Ray Train -> vastfleet: the last report in $VASTFLEET_PROGRESS_FILE, which every heartbeat carries
    (deadlines, checkpoint cadence and sweeps read it). Runs in Ray Train's controller, on this instance."""

    def __init__(self, total_steps):
        self.total = total_steps

    def after_report(self, run_context, metrics, checkpoint):
        path, step = os.environ.get("VASTFLEET_PROGRESS_FILE"), metrics[0].get("step", 0)
        if path:  # written whole, then renamed: the agent never reads half a file
            with open(path + ".tmp", "w") as fh:
                json.dump({"step": step, "fraction": step / self.total, "metrics": metrics[0]}, fh)
            os.replace(path + ".tmp", path)


@ray.remote(num_cpus=0)
class Mean:
    """Each step's gradients of all workers, averaged: every worker waits for the others."""

    def __init__(self, workers):
        self.workers, self.parts, self.ready = workers, {}, {}

    async def reduce(self, step, grad):
        parts = self.parts.setdefault(step, [])
        ready = self.ready.setdefault(step, asyncio.Event())
        parts.append(np.asarray(grad))
        if len(parts) == self.workers:
            ready.set()
        await ready.wait()
        return sum(parts) / self.workers


def train_loop(config):
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    rng = np.random.default_rng(rank)  # this worker's shard of the data
    x = rng.normal(size=(64, 4))
    y = x @ np.array([1.0, -2.0, 0.5, 3.0])
    state = {"step": 0, "w": [0.0] * 4, "counted": [], "attempts": []}
    resumed = ray.train.get_checkpoint()
    if resumed:
        with resumed.as_directory() as d, open(os.path.join(d, "state.json")) as fh:
            state = json.load(fh)
    state["attempts"].append({"attempt": os.environ.get("VASTFLEET_ATTEMPT"), "from": state["step"]})
    if rank == 0:
        print(f"RESUME at step {state['step'] + 1}" if resumed else "START at step 1", flush=True)
    w = np.array(state["w"])
    for step in range(state["step"] + 1, config["steps"] + 1):
        grad = 2 * x.T @ (x @ w - y) / len(x)
        w = w - 0.05 * ray.get(config["mean"].reduce.remote(step, grad))
        time.sleep(config["sleep"])
        state["step"], state["w"] = step, w.tolist()
        state["counted"].append(step)
        metrics = {"step": step, "loss": float(np.mean((x @ w - y) ** 2))}
        keep = step % config["every"] == 0 or step == config["steps"]
        with tempfile.TemporaryDirectory() as d:
            checkpoint = None
            if keep and rank == 0:
                with open(os.path.join(d, "state.json"), "w") as fh:
                    json.dump(state, fh)
                with open(os.path.join(d, "weights.bin"), "wb") as fh:
                    fh.write(os.urandom(int(config["weights_mb"] * 2**20)))
                checkpoint = Checkpoint.from_directory(d)
            name = f"checkpoint_{step:06d}" if keep else None  # the same on every worker
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)
        if rank == 0:
            print(f"STEP {step} loss {metrics['loss']:.4f}", flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--every", type=int, default=5)
    p.add_argument("--sleep", type=float, default=0.5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--weights-mb", type=float, default=0.0)
    a = p.parse_args()
    ray.init()  # RAY_ADDRESS and the attempt's token come from the agent
    trainer = DataParallelTrainer(
        train_loop,
        train_loop_config={"steps": a.steps, "every": a.every, "sleep": a.sleep, "weights_mb": a.weights_mb,
                           "mean": Mean.remote(a.workers)},
        scaling_config=ScalingConfig(num_workers=a.workers, use_gpu=False),
        run_config=RunConfig(
            storage_path=os.environ.get("VASTFLEET_RAY_STORAGE", os.path.expanduser("~/ray_results")),
            name=os.environ.get("VASTFLEET_RAY_NAME", "ray-train-example"),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=[VastfleetProgress(a.steps)],
        ),
    )
    result = trainer.fit()
    print(f"DONE step {result.metrics['step']} loss {result.metrics['loss']:.6f}", flush=True)


if __name__ == "__main__":
    main()
