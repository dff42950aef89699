"""vastfleet example: a Ray Tune ASHA search of 4 trials inside one instance that picks up where it stopped
after a preemption: finished trials are kept, the others resume from their own last checkpoints.

What makes it resume (docs/ray.md): `RunConfig(storage_path=$VASTFLEET_RAY_STORAGE, name=$VASTFLEET_RAY_NAME)`
and `Tuner.can_restore` / `Tuner.restore(..., resume_errored=True)` on start. The agent turns each new Tune
experiment state into a vastfleet checkpoint and restores it to the same path on the next instance. Each
trial checkpoint's `state.json` carries `counted`, every iteration along the trial's surviving lineage.
Usage (under vastfleet, `runtime: ray`): python3 ray_tune.py [--iters N] [--sleep S] [--concurrent C]
"""

import argparse
import json
import os
import tempfile
import time

from ray import tune
from ray.tune.schedulers import ASHAScheduler


class VastfleetProgress(tune.Callback):
    """Ray Tune -> vastfleet: trials done and the last result in $VASTFLEET_PROGRESS_FILE, which every
    heartbeat carries (deadlines, checkpoint cadence and sweeps read it). Runs in the driver."""

    def on_trial_result(self, iteration, trials, trial, result, **info):
        path, done = os.environ.get("VASTFLEET_PROGRESS_FILE"), sum(t.status == "TERMINATED" for t in trials)
        if path:  # written whole, then renamed: the agent never reads half a file
            with open(path + ".tmp", "w") as fh:
                json.dump({"step": iteration, "fraction": done / len(trials), "trials_done": done,
                           "metrics": {"trial": trial.trial_id, "score": result.get("score")}}, fh)
            os.replace(path + ".tmp", path)


def trainable(config):
    state = {"iter": 0, "score": 0.0, "counted": [], "attempts": []}
    resumed = tune.get_checkpoint()
    if resumed:
        with resumed.as_directory() as d, open(os.path.join(d, "state.json")) as fh:
            state = json.load(fh)
    state["attempts"].append({"attempt": os.environ.get("VASTFLEET_ATTEMPT"), "from": state["iter"]})
    while state["iter"] < config["iters"]:
        state["iter"] += 1
        state["counted"].append(state["iter"])
        state["score"] += config["lr"]  # a bigger step size scores better: ASHA stops the small ones
        time.sleep(config["sleep"])
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "state.json"), "w") as fh:
                json.dump(state, fh)
            tune.report({"score": state["score"], "iter": state["iter"]}, checkpoint=tune.Checkpoint.from_directory(d))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--iters", type=int, default=8)
    p.add_argument("--sleep", type=float, default=0.5)
    p.add_argument("--concurrent", type=int, default=2)
    a = p.parse_args()
    storage = os.environ.get("VASTFLEET_RAY_STORAGE", os.path.expanduser("~/ray_results"))
    name = os.environ.get("VASTFLEET_RAY_NAME", "ray-tune-example")
    fn = tune.with_parameters(trainable)
    if tune.Tuner.can_restore(os.path.join(storage, name)):
        print("RESTORE the search", flush=True)
        tuner = tune.Tuner.restore(os.path.join(storage, name), fn, resume_errored=True)
    else:
        tuner = tune.Tuner(
            fn,
            param_space={"lr": tune.grid_search([0.4, 0.3, 0.2, 0.1]), "iters": a.iters, "sleep": a.sleep},
            tune_config=tune.TuneConfig(
                metric="score", mode="max", max_concurrent_trials=a.concurrent,
                scheduler=ASHAScheduler(time_attr="iter", max_t=a.iters, grace_period=2, reduction_factor=2),
            ),
            run_config=tune.RunConfig(
                storage_path=storage, name=name, callbacks=[VastfleetProgress()],
                # one checkpoint kept per trial; Tune then snapshots its state after each trial checkpoint
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            ),
        )
    results = tuner.fit()
    for r in sorted(results, key=lambda r: r.config["lr"]):
        print(f"TRIAL lr={r.config['lr']} iters {r.metrics['iter']} score {r.metrics['score']:.2f}", flush=True)
    best = results.get_best_result()
    print(f"DONE best lr={best.config['lr']} score {best.metrics['score']:.2f}", flush=True)


if __name__ == "__main__":
    main()
