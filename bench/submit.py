"""Submit throughput: N jobs through the vastfleet HTTP API against N plain RQ enqueues on the same Redis.

Starts a real redis-server (append-only) and `vastfleet server` (uvicorn, a separate process) on loopback,
then times, on the same Redis:

  api (1 client)      POST /v1/jobs over one keep-alive connection, one request at a time
  api (C clients)     the same from C threads, each with its own keep-alive connection
  JobStore.submit     the store called directly (no HTTP): spec validation excluded, Lua script included
  rq enqueue          rq.Queue.enqueue of a trivial function (the baseline the issue asks for)

Run from the repository root:  .venv/bin/python bench/submit.py --n 2000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

import httpx
import redis
from rq import Queue
from tests.helpers import RedisServer, clean_env, free_port, wait_for

from vastfleet.queue import JobStore
from vastfleet.spec import job_spec_from_dict

TOKEN = "bench-token"
SPEC = {"name": "bench", "image": "pytorch/pytorch:2.3.0", "run": "python train.py",
        "resources": {"gpu": ["RTX_4090", "RTX_3090"], "gpus": 1, "disk_gb": 40}, "priority": 1}


def timed(n: int, work: Callable[[], None]) -> float:
    """Jobs per second of `work`, which performs n submissions."""
    start = time.perf_counter()
    work()
    return n / (time.perf_counter() - start)


def api_sequential(url: str, n: int) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        for _ in range(n):
            client.post("/v1/jobs", json=SPEC).raise_for_status()


def api_concurrent(url: str, n: int, clients: int) -> None:
    errors: list[BaseException] = []

    def worker(count: int) -> None:
        try:
            api_sequential(url, count)
        except BaseException as exc:  # noqa: BLE001 - reported after the join
            errors.append(exc)

    shares = [n // clients + (1 if i < n % clients else 0) for i in range(clients)]
    threads = [threading.Thread(target=worker, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="jobs per measurement")
    parser.add_argument("--clients", type=int, default=4, help="concurrent API clients (0 = skip)")
    parser.add_argument("--appendfsync", default="everysec", choices=["always", "everysec", "no"],
                        help="Redis AOF fsync policy (production: everysec or always)")
    args = parser.parse_args()
    n = args.n

    with tempfile.TemporaryDirectory(prefix="vf-bench-") as tmp:
        server = RedisServer(Path(tmp) / "redis", appendonly=True).start()
        raw = redis.Redis.from_url(server.url)
        raw.config_set("appendfsync", args.appendfsync)
        port = free_port()
        api = subprocess.Popen(
            [sys.executable, "-m", "vastfleet.cli", "server", "--port", str(port), "--redis-url", server.url],
            env=clean_env(VASTFLEET_TOKEN=TOKEN, PYTHONPATH=str(ROOT / "src")),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: httpx.get(f"{url}/healthz").status_code == 200, timeout=30, what="the API")
            api_sequential(url, 50)  # warm-up: imports, connection, script cache
            rates: dict[str, float] = {}
            rates["api (1 client)"] = timed(n, lambda: api_sequential(url, n))
            if args.clients > 0:
                rates[f"api ({args.clients} clients)"] = timed(n, lambda: api_concurrent(url, n, args.clients))

            store = JobStore(redis.Redis.from_url(server.url, decode_responses=True), prefix="direct")
            spec = job_spec_from_dict(SPEC)
            rates["JobStore.submit"] = timed(n, lambda: [store.submit(spec) for _ in range(n)] and None)

            # a trivial function a worker could import (RQ refuses functions of __main__); never run here
            queue = Queue("bench", connection=raw)
            rates["rq enqueue"] = timed(n, lambda: [queue.enqueue(json.dumps, 1) for _ in range(n)] and None)

            api_jobs = int(raw.zcard("vf:jobs"))
            expected = n * (2 if args.clients > 0 else 1) + 50
            assert api_jobs == expected, f"the API stored {api_jobs} jobs, expected {expected}"
            assert queue.count == n
        finally:
            api.terminate()
            api.wait(10)
            server.stop()

    baseline = rates["rq enqueue"]
    print(f"submit benchmark: n={n} per row, Redis AOF appendfsync={args.appendfsync}, "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"{'path':<22}{'jobs/s':>10}{'x rq':>8}{'ms/job':>9}")
    for name, rate in rates.items():
        print(f"{name:<22}{rate:>10.0f}{rate / baseline:>8.2f}{1000 / rate:>9.3f}")
    print(f"ratio api(1 client)/rq = {rates['api (1 client)'] / baseline:.2f}")


if __name__ == "__main__":
    main()
