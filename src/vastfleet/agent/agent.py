"""vastfleet agent: runs one attempt of one job on a rented instance. One file, standard library only,
Python 3.8+. The onstart command writes it to disk and runs it on every container start.

Environment, set by the control plane in the instance env at create time (never in onstart):
  VASTFLEET_API          base URL of the vastfleet API as the instance reaches it
  VASTFLEET_AGENT_TOKEN  this attempt's token, bound to (job, epoch, instance); the only credential
  VASTFLEET_JOB_ID       the job;  VASTFLEET_ATTEMPT: the epoch
  VASTFLEET_WORKDIR      optional; else $VASTFLEET_SIM_WORKSPACE (the simulator's sandbox), else /workspace
The job's command, setup, env and runtime come from the claim answer, so onstart is the same for all jobs.

On every start: check the GPU (nvidia-smi on PATH; CUDA_VISIBLE_DEVICES empty or -1 means none) -> without
one, report "no GPU visible: ..." through finish and run nothing. Claim (409 = this attempt is over:
exit, write nothing). Restore the latest committed checkpoint into $VASTFLEET_CKPT_DIR/<step>/ verifying
every file's sha256 (a local copy that verifies is reused). Upload checkpoint dirs a previous container
left behind. Run setup, then run, under /bin/bash (or /bin/sh) in the workdir, with:
  VASTFLEET_JOB_ID, VASTFLEET_ATTEMPT, VASTFLEET_WORKDIR, VASTFLEET_CKPT_DIR, VASTFLEET_RESUME (1/0),
  VASTFLEET_RESUME_DIR and VASTFLEET_RESUME_STEP (when resuming), VASTFLEET_CKPT_INTERVAL (seconds),
  VASTFLEET_PROGRESS_FILE, VASTFLEET_CONTROL_FILE, VASTFLEET_GPUS; RAY_ADDRESS with runtime: ray.
The agent token is removed from the command's environment.

Layout: $WORKDIR/.vastfleet/{agent.py, ckpt/, progress.json, control.json}.
Checkpoints: the job writes a complete directory atomically (write into a temp dir, fsync, rename) to
$VASTFLEET_CKPT_DIR/<name>/ where <name> holds the step number (its last run of digits: `120`,
`step-000120`). Names starting with "." or ending in .tmp/.part/.partial are ignored. The agent polls,
hashes the newest directory whose step is above the last committed one, PUTs each file to a presigned
URL, then commits the manifest {step, files: {relpath: {size, sha256}}}. A failed upload is retried on
the next poll (a directory rejected 3 times is given up); a newer directory supersedes an older one not
yet started. The final upload happens after the command exits, before finish.
Progress: the job may write a JSON object to $VASTFLEET_PROGRESS_FILE; each heartbeat sends it with the
last committed step. Control: the agent writes {"checkpoint_interval", "checkpoint_requested"} to
$VASTFLEET_CONTROL_FILE; the counter goes up when the control plane asks for a checkpoint now.
Heartbeat answers: continue | checkpoint | stop. On stop, or a 409 on any call, the agent kills the job's
process group and exits without uploading or committing anything. Transient API errors are retried with
backoff. The job runs under a guard process (this file with --guard) that kills the job's process group
if the agent dies, so a killed agent never leaves the job running. Logs go to stdout; no token or
presigned URL is ever printed. runtime: ray -> `ray start --head --num-gpus=N` first, `ray stop` after;
without `ray` on PATH the attempt finishes with exit code 127 and a clear error.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

AGENT_VERSION = "1"
SKIP_SUFFIXES = (".tmp", ".part", ".partial")
DIGITS = re.compile(r"(\d+)(?!.*\d)")
MAX_REJECTS = 3


def log(msg):
    print("[vastfleet-agent {}] {}".format(time.strftime("%H:%M:%S"), msg), flush=True)


def where(url):
    return url.split("?", 1)[0]  # never print a URL's signature


class StopOrder(Exception):
    """409 from the API: this attempt is over."""


class Fatal(Exception):
    """The API refused us for good (401/403/404)."""


class Rejected(Exception):
    """The API refused one request (4xx); the attempt goes on."""


class Transient(Exception):
    def __init__(self, msg, delay=None):
        Exception.__init__(self, msg)
        self.delay = delay


class Api:
    def __init__(self, base, job_id, token, timeout=30.0):
        self.base = base.rstrip("/") + "/v1/agent/jobs/" + job_id + "/"
        self.token = token
        self.timeout = timeout

    def once(self, verb, body=None, timeout=None):
        data = json.dumps(body or {}).encode()
        req = urllib.request.Request(
            self.base + verb,
            data=data,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": "Bearer " + self.token},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read() or b"{}").get("detail", "")
            except ValueError:
                detail = ""
            msg = f"{verb}: HTTP {exc.code} {detail}"
            if exc.code == 409:
                raise StopOrder(msg)
            if exc.code in (401, 403, 404):
                raise Fatal(msg)
            if exc.code == 429 or exc.code >= 500:
                retry = exc.headers.get("Retry-After") if exc.headers else None
                raise Transient(msg, float(retry) if retry and retry.isdigit() else None)
            raise Rejected(msg)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise Transient("{}: {}".format(verb, getattr(exc, "reason", exc)))

    def call(self, verb, body=None, patience=300.0, timeout=None):
        """Retry transient failures with backoff until `patience` seconds have passed."""
        deadline, delay = time.time() + patience, 0.5
        while True:
            try:
                return self.once(verb, body, timeout)
            except Transient as exc:
                if time.time() >= deadline:
                    raise
                pause = exc.delay if exc.delay else delay * (0.5 + random.random())
                log(f"{exc} (retrying in {pause:.1f}s)")
                time.sleep(min(pause, max(0.1, deadline - time.time())))
                delay = min(delay * 2, 15.0)


def put_file(url, headers, path, size, tries=4):
    for attempt in range(tries):
        try:
            with open(path, "rb") as fh:
                hdrs = dict(headers)
                hdrs["Content-Length"] = str(size)
                req = urllib.request.Request(url, data=fh, method="PUT", headers=hdrs)
                with urllib.request.urlopen(req, timeout=600) as resp:
                    resp.read()
            return
        except (urllib.error.URLError, OSError) as exc:
            code = getattr(exc, "code", None)
            if attempt == tries - 1 or (code is not None and 400 <= code < 500 and code != 429):
                raise Transient(f"upload to {where(url)} failed: {code or exc}")
            time.sleep((2**attempt) * (0.5 + random.random()))


def get_file(url, dest, size, sha256, tries=4):
    for attempt in range(tries):
        try:
            digest, got = hashlib.sha256(), 0
            with urllib.request.urlopen(url, timeout=600) as resp, open(dest, "wb") as out:
                while True:
                    block = resp.read(1 << 20)
                    if not block:
                        break
                    digest.update(block)
                    got += len(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            if got != size or digest.hexdigest() != sha256:
                raise OSError("size or sha256 differs from the manifest")
            return
        except (urllib.error.URLError, OSError) as exc:
            if attempt == tries - 1:
                raise Transient(f"download from {where(url)} failed: {exc}")
            time.sleep((2**attempt) * (0.5 + random.random()))


def sha256_file(path):
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while True:
            block = fh.read(1 << 20)
            if not block:
                return size, digest.hexdigest()
            digest.update(block)
            size += len(block)


def dir_files(root):
    """{relpath: {size, sha256}} of the regular files below root (symlinks are skipped)."""
    files = {}
    for here, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(here, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            size, sha = sha256_file(path)
            files[os.path.relpath(path, root).replace(os.sep, "/")] = {"size": size, "sha256": sha}
    return files


def matches(root, files):
    for rel, meta in files.items():
        path = os.path.join(root, *rel.split("/"))
        if not os.path.isfile(path) or (meta["size"], meta["sha256"]) != sha256_file(path):
            return False
    return True


def ckpt_dirs(ckpt_dir):
    """Complete checkpoint directories as (step, path), by step."""
    out = []
    try:
        names = os.listdir(ckpt_dir)
    except OSError:
        return out
    for name in names:
        path = os.path.join(ckpt_dir, name)
        m = DIGITS.search(name)
        if name.startswith(".") or name.endswith(SKIP_SUFFIXES) or not m or not os.path.isdir(path):
            continue
        out.append((int(m.group(1)), path))
    return sorted(out)


def write_json(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def check_gpu():
    """(gpu names, None) or ([], reason)."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None and cvd.strip() in ("", "-1", "none", "NoDevFiles"):
        return [], f"no GPU visible: CUDA_VISIBLE_DEVICES={cvd!r} hides every GPU"
    smi = shutil.which("nvidia-smi")
    if not smi:
        return [], "no GPU visible: nvidia-smi is not on PATH (no NVIDIA driver in this container?)"
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,memory.total", "--format=csv,noheader"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], f"no GPU visible: nvidia-smi did not run: {exc}"
    text = out.stdout.decode(errors="replace").strip()
    if out.returncode != 0:
        return [], f"no GPU visible: nvidia-smi exited {out.returncode}: {text[-300:]}"
    gpus = [line.strip() for line in text.splitlines() if line.strip()]
    if not gpus:
        return [], "no GPU visible: nvidia-smi lists no GPU"
    return gpus, None


class Agent:
    def __init__(self, env):
        self.api = Api(env["VASTFLEET_API"], env["VASTFLEET_JOB_ID"], env["VASTFLEET_AGENT_TOKEN"])
        self.job_id, self.attempt = env["VASTFLEET_JOB_ID"], env["VASTFLEET_ATTEMPT"]
        self.workdir = env.get("VASTFLEET_WORKDIR") or env.get("VASTFLEET_SIM_WORKSPACE") or "/workspace"
        self.home = os.path.join(self.workdir, ".vastfleet")
        self.ckpt_dir = os.path.join(self.home, "ckpt")
        self.progress_file = os.path.join(self.home, "progress.json")
        self.control_file = os.path.join(self.home, "control.json")
        self.patience = float(env.get("VASTFLEET_AGENT_PATIENCE", "900"))
        self.stopping = threading.Event()  # the control plane said stop: write nothing more
        self.done = threading.Event()  # the command is over: heartbeats end
        self.terminated = False  # SIGTERM: the container is going down; no finish
        self.committed, self.committed_dir, self.rejects = -1, None, {}
        self.hb_interval, self.poll, self.ckpt_interval, self.requested = 5.0, 1.0, 600.0, 0
        self.guard = None
        self.beat = None
        self.phase = "starting"

    # --- lifecycle ----------------------------------------------------------------------------------

    def main(self):
        log(f"agent {AGENT_VERSION} for job {self.job_id} attempt {self.attempt}, workdir {self.workdir}")
        for path in (self.workdir, self.ckpt_dir):
            os.makedirs(path, exist_ok=True)
        gpus, problem = check_gpu()
        if problem:
            log(problem)
            return self.finish(None, problem)
        log("GPUs: {}".format("; ".join(gpus)))
        try:
            claim = self.api.call(
                "claim",
                {"gpus": gpus, "instance_id": os.environ.get("CONTAINER_ID"), "agent": AGENT_VERSION},
                self.patience,
            )
        except StopOrder as exc:
            log(f"this attempt is over, exiting without writing anything ({exc})")
            return 0
        except (Fatal, Rejected, Transient) as exc:
            log(f"cannot claim the job: {exc}")
            return 1
        self.hb_interval = float(claim.get("heartbeat_interval") or 5)
        self.poll = float(claim.get("poll_interval") or 1)
        self.ckpt_interval = float(claim.get("checkpoint_interval") or 600)
        if len(gpus) < int(claim.get("gpus") or 1):
            return self.finish(None, f"no GPU visible: {len(gpus)} of {claim.get('gpus')} GPUs")
        self.write_control()
        self.phase = "restoring"
        self.beat = threading.Thread(target=self.heartbeats, name="heartbeat", daemon=True)
        self.beat.start()  # from the claim on, so a long restore or upload is not taken for a dead agent
        try:
            resume_dir = self.restore(claim.get("checkpoint"))
        except StopOrder as exc:
            log(f"stopped: {exc}")
            return 0
        except (Transient, Rejected, Fatal, OSError) as exc:
            return self.finish(None, f"checkpoint restore failed: {exc}")
        try:
            self.sync(final=True)  # directories a previous container of this attempt left behind
        except StopOrder as exc:
            log(f"stopped: {exc}")
            return 0
        except (Rejected, Fatal) as exc:
            log(f"upload of checkpoints left behind failed: {exc}")
        if self.committed_dir:
            resume_dir = self.committed_dir
        return self.run(claim, gpus, resume_dir)

    def run(self, claim, gpus, resume_dir):
        env = dict(os.environ)
        env.pop("VASTFLEET_AGENT_TOKEN", None)
        env.update({str(k): str(v) for k, v in (claim.get("env") or {}).items()})
        env.update(
            {
                "VASTFLEET_JOB_ID": self.job_id,
                "VASTFLEET_ATTEMPT": str(self.attempt),
                "VASTFLEET_WORKDIR": self.workdir,
                "VASTFLEET_CKPT_DIR": self.ckpt_dir,
                "VASTFLEET_RESUME": "1" if resume_dir else "0",
                "VASTFLEET_CKPT_INTERVAL": str(self.ckpt_interval),
                "VASTFLEET_PROGRESS_FILE": self.progress_file,
                "VASTFLEET_CONTROL_FILE": self.control_file,
                "VASTFLEET_GPUS": str(len(gpus)),
            }
        )
        if resume_dir:
            env["VASTFLEET_RESUME_DIR"], env["VASTFLEET_RESUME_STEP"] = resume_dir, str(self.committed)
        ray = claim.get("runtime") == "ray"
        if ray:
            problem = self.start_ray(len(gpus), env)
            if problem:
                log(problem)
                return self.finish(127, problem)
        signal.signal(signal.SIGTERM, self.on_sigterm)
        self.phase = "running"
        code, error = 0, None
        for phase in ("setup", "run"):
            script = claim.get(phase)
            if not script:
                continue
            log(f"{phase}: starting")
            code = self.supervise(script, env)
            if code is None or code != 0:
                error = "setup failed" if phase == "setup" and code else None
                break
        if ray:
            subprocess.run(
                ["ray", "stop", "--force"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
            )
        if self.stopping.is_set():
            self.done.set()
            log("stopped by the control plane; nothing uploaded or reported")
            return 0
        log(f"command exited with {code}")
        self.phase = "uploading"
        try:
            self.sync(final=True)
        except StopOrder as exc:
            self.done.set()
            log(f"stopped: {exc}")
            return 0
        except (Transient, Rejected, Fatal) as exc:
            log(f"final checkpoint upload failed: {exc}")
        if self.stopping.is_set():
            self.done.set()
            log("stopped by the control plane during the final upload; nothing reported")
            return 0
        self.done.set()
        self.beat.join(timeout=self.hb_interval + 35)
        if self.terminated:
            log("container is stopping (SIGTERM): not reporting an exit")
            return 0
        return self.finish(code, error)

    def finish(self, code, error):
        self.done.set()  # no heartbeat after the attempt's end
        try:
            answer = self.api.call("finish", {"exit_code": code, "error": error}, max(self.patience, 60))
            log(
                "reported {}: job is {}".format(
                    f"exit {code}" if code is not None else error, answer.get("state")
                )
            )
        except (StopOrder, Fatal, Rejected, Transient) as exc:
            log(f"could not report the exit: {exc}")
        return 0

    # --- the command --------------------------------------------------------------------------------

    def supervise(self, script, env):
        """Run one shell script under the guard; returns its exit code, or None when stopped."""
        shell = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
        self.guard = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--guard", shell, "-c", script],
            cwd=self.workdir,
            env=env,
            stdin=subprocess.PIPE,
            start_new_session=True,
        )
        last_sync = 0.0
        while self.guard.poll() is None:
            if self.stopping.is_set():
                self.kill_job()
                return None
            if time.time() - last_sync >= self.poll:
                last_sync = time.time()
                try:
                    self.sync()
                except StopOrder as exc:
                    self.stop(str(exc))
                except (Transient, Rejected, Fatal) as exc:
                    log(f"checkpoint upload: {exc} (will retry)")
            self.stopping.wait(min(self.poll, 0.5))
        return None if self.stopping.is_set() else self.guard.returncode

    def kill_job(self):
        if self.guard is None or self.guard.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.guard.pid, sig)
            except OSError:
                return
            try:
                self.guard.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def stop(self, why):
        if not self.stopping.is_set():
            log(f"stop: {why}")
            self.stopping.set()

    def on_sigterm(self, signum, frame):
        self.terminated = True
        if self.guard is not None and self.guard.poll() is None:
            try:
                os.killpg(self.guard.pid, signal.SIGTERM)
            except OSError:
                pass

    def start_ray(self, gpus, env):
        ray = shutil.which("ray", path=env.get("PATH"))
        if not ray:
            return "runtime ray: `ray` is not on PATH in this image; install ray there or use runtime: plain"
        cmd = [ray, "start", "--head", "--port=6379", f"--num-gpus={gpus}", "--disable-usage-stats"]
        out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        if out.returncode != 0:
            return "runtime ray: `ray start` failed: {}".format(out.stdout.decode(errors="replace")[-300:])
        env["RAY_ADDRESS"] = "127.0.0.1:6379"
        return None

    # --- heartbeats ---------------------------------------------------------------------------------

    def heartbeats(self):
        while not self.done.is_set() and not self.stopping.is_set():
            progress = {}
            try:
                with open(self.progress_file) as fh:
                    loaded = json.load(fh)
                progress = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                pass
            try:
                ans = self.api.once(
                    "heartbeat", {"progress": progress, "ckpt_step": self.committed, "phase": self.phase}
                )
            except StopOrder as exc:
                self.stop(str(exc))
                return
            except (Transient, Rejected, Fatal) as exc:
                log(f"heartbeat: {exc}")
                ans = {}
            if ans.get("action") == "stop":
                self.stop("the control plane says stop")
                return
            changed = ans.get("action") == "checkpoint"
            self.requested += 1 if changed else 0
            interval = ans.get("checkpoint_interval")
            if interval and float(interval) != self.ckpt_interval:
                self.ckpt_interval, changed = float(interval), True
            if changed:
                self.write_control()
            self.hb_interval = float(ans.get("heartbeat_interval") or self.hb_interval)
            self.done.wait(self.hb_interval)

    def write_control(self):
        write_json(
            self.control_file,
            {"checkpoint_interval": self.ckpt_interval, "checkpoint_requested": self.requested},
        )

    # --- checkpoints --------------------------------------------------------------------------------

    def restore(self, cp):
        """Put the latest committed checkpoint in place; returns its directory, or None."""
        if not cp:
            log("no checkpoint to restore: starting fresh")
            return None
        step, files = int(cp["step"]), cp["files"]
        self.committed = step
        for s, path in ckpt_dirs(self.ckpt_dir):
            if s == step and matches(path, files):
                log(f"checkpoint step {step} already here: {path}")
                self.committed_dir = path
                return path
        target = os.path.join(self.ckpt_dir, str(step))
        tmp = os.path.join(self.ckpt_dir, f".restore-{step}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for rel, meta in sorted(files.items()):
            dest = os.path.join(tmp, *rel.split("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            get_file(meta["url"], dest, int(meta["size"]), meta["sha256"])
        if os.path.exists(target):
            os.replace(target, os.path.join(self.ckpt_dir, f".replaced-{step}-{int(time.time())}"))
        os.replace(tmp, target)
        log(f"restored checkpoint step {step} ({len(files)} files, verified)")
        self.committed_dir = target
        return target

    def sync(self, final=False):
        """Upload and commit the newest complete directory above the last commit (all of them if final)."""
        while not self.stopping.is_set():
            pending = [
                (s, p)
                for s, p in ckpt_dirs(self.ckpt_dir)
                if s > self.committed and self.rejects.get(s, 0) < MAX_REJECTS
            ]
            if not pending:
                return
            step, path = pending[-1]
            if not final:
                return self.upload(step, path)
            try:
                self.upload(step, path)
            except Transient as exc:
                log(f"{exc} (retrying)")
                time.sleep(1.0)

    def upload(self, step, path):
        files = dir_files(path)
        if not files:
            self.rejects[step] = MAX_REJECTS
            log(f"checkpoint {path} is empty: skipped")
            return
        manifest = {"step": step, "files": files}
        try:
            urls = self.api.call("presign-upload", manifest, 120)["files"]
            for rel, meta in sorted(files.items()):
                if self.stopping.is_set():
                    return
                put_file(
                    urls[rel]["url"],
                    urls[rel].get("headers") or {},
                    os.path.join(path, *rel.split("/")),
                    meta["size"],
                )
            if self.stopping.is_set():
                return
            self.api.call("commit", manifest, 120, timeout=900)  # the API reads big objects back
        except (Rejected, Transient) as exc:
            self.rejects[step] = self.rejects.get(step, 0) + 1
            raise Transient(
                f"checkpoint step {step} not committed ({self.rejects[step]}/{MAX_REJECTS}): {exc}"
            )
        self.committed, self.committed_dir = step, path
        size = sum(m["size"] for m in files.values())
        log(f"committed checkpoint step {step} ({len(files)} files, {size} bytes)")


def guard(argv):
    """The job's process-group leader: runs the command, and kills the group if the agent dies."""
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)

    def watch():
        try:
            while os.read(0, 4096):  # EOF when the agent is gone
                pass
        except OSError:
            pass
        if child.poll() is None:
            os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()
    code = child.wait()
    os._exit(128 - code if code < 0 else code)  # no interpreter shutdown under a blocked reader thread


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--guard":
        return guard(sys.argv[2:])
    env = os.environ
    missing = [
        k
        for k in ("VASTFLEET_API", "VASTFLEET_AGENT_TOKEN", "VASTFLEET_JOB_ID", "VASTFLEET_ATTEMPT")
        if not env.get(k)
    ]
    if missing:
        log("cannot start: {} missing from the instance env".format(", ".join(missing)))
        return 2
    return Agent(env).main()


if __name__ == "__main__":
    sys.exit(main())
