"""vastfleet example trial: a synthetic training curve with a known best point (standard library only).

The "validation loss" after `step` steps is  final + (1.5 - final) * exp(-step / (steps / 5)),  where
final(lr, bs) = 0.1 + 0.5 * (log10(lr) + 2.5)^2 + 0.1 * (log2(bs) - 6)^2: the best point is lr = 10^-2.5,
bs = 64 (loss 0.1). Every step writes {"step", "val_loss"} to $VASTFLEET_PROGRESS_FILE (the heartbeats carry
it to the sweep) and every K steps an atomic checkpoint (temp dir -> fsync -> rename); a resumed attempt
starts from the checkpoint's step. Parameters come from VASTFLEET_PARAM_LR and VASTFLEET_PARAM_BS.
Usage: python3 sweep_trial.py [--steps N] [--every K] [--sleep S]
"""

import argparse
import json
import math
import os
import time

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=90)
p.add_argument("--every", type=int, default=10)
p.add_argument("--sleep", type=float, default=0.1)
a = p.parse_args()
lr = float(os.environ.get("VASTFLEET_PARAM_LR", "0.001"))
bs = int(os.environ.get("VASTFLEET_PARAM_BS", "64"))
final = 0.1 + 0.5 * (math.log10(lr) + 2.5) ** 2 + 0.1 * (math.log2(bs) - 6) ** 2
ckpt = os.environ.get("VASTFLEET_CKPT_DIR", "ckpt")
progress = os.environ.get("VASTFLEET_PROGRESS_FILE", "")
os.makedirs(ckpt, exist_ok=True)


def loss(step):
    return final + (1.5 - final) * math.exp(-step / (a.steps / 5.0))


def write(path, data):
    with open(path + ".tmp", "w") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(path + ".tmp", path)


def checkpoint(step):
    final_dir = os.path.join(ckpt, f"step-{step:08d}")
    if os.path.exists(final_dir):
        return
    tmp = os.path.join(ckpt, f".step-{step:08d}.tmp")
    os.makedirs(tmp, exist_ok=True)
    write(os.path.join(tmp, "state.json"), {"step": step, "lr": lr, "bs": bs})
    os.rename(tmp, final_dir)
    print(f"CHECKPOINT step {step}", flush=True)


step = 0
if os.environ.get("VASTFLEET_RESUME") == "1":
    with open(os.path.join(os.environ["VASTFLEET_RESUME_DIR"], "state.json")) as fh:
        step = json.load(fh)["step"]
    print(f"RESUME from step {step}", flush=True)
while step < a.steps:
    time.sleep(a.sleep)
    step += 1
    if progress:
        write(progress, {"step": step, "val_loss": round(loss(step), 6)})
    if step % a.every == 0:
        checkpoint(step)
checkpoint(step)
print(f"DONE lr={lr} bs={bs} val_loss={loss(step):.6f}", flush=True)
