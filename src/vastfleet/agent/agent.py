"""vastfleet agent: runs one attempt of one job on a rented instance. One file, standard library only,
Python 3.8+. The onstart command writes it to disk and runs it on every container start.

Environment, set by the control plane in the instance env at create time (never in onstart):
  VASTFLEET_API          base URL of the vastfleet API as the instance reaches it
  VASTFLEET_AGENT_TOKEN  the onstart token, bound to (job, epoch, instance): good for ONE claim only, since
                         vast shows this env in every instance listing
  VASTFLEET_JOB_ID       the job;  VASTFLEET_ATTEMPT: the epoch
  VASTFLEET_WORKDIR      optional; else $VASTFLEET_SIM_WORKSPACE (the simulator's sandbox), else /workspace
The job's command, setup, env and runtime come from the claim answer, so onstart is the same for all jobs.

Before its first claim the agent saves a random nonce in $WORKDIR/.vastfleet/claim.json (mode 0600) and sends
it: a claim retried with the same nonce (its answer was lost) gets the same session back. The claim answers a
per-attempt session secret, saved there at once; every later call uses it, and a restarted container of the
same attempt re-claims with it. On every start: check the GPU (without one: claim with the error, which
ends the attempt as the host's fault); claim (409 = this attempt is over: exit, write nothing); restore the
latest checkpoint into $VASTFLEET_CKPT_DIR/<step>/, verifying every file (one that does not verify is
reported on restore-failed, and the agent restores the previous one the API answers); upload checkpoint
dirs a previous container left behind; run setup, then run, under a guard process (this file with --guard)
that kills the job's process group if the agent dies. Checkpoint dirs (or files in them) that are links
leading out of the dir are skipped, never uploaded. A job that cannot even start (bad env, exec error) and
any unexpected failure of the agent are reported through finish as the job's fault. Heartbeat answers:
continue | checkpoint | stop; on stop, or a 409 on any call, the agent kills the job and exits without
uploading or committing anything. With runtime ray: this attempt's Ray head under a guard of its own (free
ports, loopback, its own token; it and the job share their fate), and Ray's run snapshot turned into
checkpoints of the files it names, restored to the same path (docs/ray.md). docs/agent.md has the whole
contract. Logs go to stdout; no token, session, nonce or presigned URL signature is ever printed.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import os
import pickletools
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request

AGENT_VERSION = "3"
SKIP_SUFFIXES = (".tmp", ".part", ".partial")
DIGITS = re.compile(r"(\d+)(?!.*\d)")
MAX_REJECTS = 3
MAX_PROGRESS = 4096  # bytes of compact JSON the API accepts as progress
NETWORK = (urllib.error.URLError, OSError, http.client.HTTPException)
HEAD_WAIT = 300.0  # seconds for Ray's head to write its address (a few, but a loaded host is slow)
RAY_TRAIN = "checkpoint_manager_snapshot.json"  # Ray Train's commit point; Tune's: experiment_state-*.json
HEX = re.compile(r"^(?:[0-9a-f]{2}){4,}$")


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


class Denied(Exception):
    """Storage refused a presigned URL (403: expired, or the attempt is over): ask the API for fresh ones."""


class BadCheckpoint(Exception):
    """The checkpoint to restore does not verify: a file differs from its manifest, or is missing."""


class CannotStart(Exception):
    """The job's command could not be started at all (bad env, exec error): the job's fault."""


class Api:
    def __init__(self, base, job_id, token, timeout=30.0):
        self.base = base.rstrip("/") + "/v1/agent/jobs/" + job_id + "/"
        self.token = token  # the onstart token until the claim answers the session secret
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
        except (NETWORK + (ValueError,)) as exc:
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


def open_file(path):
    """Open for reading without following a link in the last component (a file swapped for a link)."""
    return os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb")


def put_file(url, headers, path, size, tries=4):
    for attempt in range(tries):
        try:
            with open_file(path) as fh:
                hdrs = dict(headers)
                hdrs["Content-Length"] = str(size)
                req = urllib.request.Request(url, data=fh, method="PUT", headers=hdrs)
                with urllib.request.urlopen(req, timeout=600) as resp:
                    resp.read()
            return
        except NETWORK as exc:
            code = getattr(exc, "code", None)
            if code == 412:
                return  # the object is already stored (write-once); the commit verifies its bytes
            if code == 403:
                raise Denied(f"upload to {where(url)} refused")
            if code is not None and 400 <= code < 500 and code != 429:  # refused for good: the step's fault
                raise Rejected(f"upload to {where(url)} refused: {code}")
            if attempt == tries - 1:  # storage unavailable: tried again later, never held against the step
                raise Transient(f"upload to {where(url)} failed: {code or exc}")
            time.sleep((2**attempt) * (0.5 + random.random()))


def get_file(url, dest, size, sha256, rel, tries=3):
    for attempt in range(tries):
        last = attempt == tries - 1
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
            if got == size and digest.hexdigest() == sha256:
                return
            if last:
                raise BadCheckpoint(f"{rel}: size or sha256 differs from the manifest")
        except NETWORK as exc:
            code = getattr(exc, "code", None)
            if code in (404, 410):
                raise BadCheckpoint(f"{rel}: missing in storage (HTTP {code})")
            if code == 403:
                raise Denied(f"{rel}: download refused")
            if last:
                raise Transient(f"download from {where(url)} failed: {code or exc}")
        time.sleep((2**attempt) * (0.5 + random.random()))


def sha256_file(path):
    digest, size = hashlib.sha256(), 0
    with open_file(path) as fh:
        while True:
            block = fh.read(1 << 20)
            if not block:
                return size, digest.hexdigest()
            digest.update(block)
            size += len(block)


def inside(path, top):
    real = os.path.realpath(path)
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def dir_files(root):
    """{relpath: {size, sha256}} of the regular files below root; None when root is a link or holds a link
    leading out of it (never followed, never uploaded). Links that stay inside are skipped."""
    if os.path.islink(root):
        return None
    top, files = os.path.realpath(root), {}
    for here, dirs, names in os.walk(root):
        dirs.sort()
        for name in dirs + sorted(names):
            path = os.path.join(here, name)
            if os.path.islink(path):
                if not inside(path, top):
                    return None
                continue
            if name in dirs or not os.path.isfile(path):
                continue
            size, sha = sha256_file(path)
            files[os.path.relpath(path, root).replace(os.sep, "/")] = {"size": size, "sha256": sha}
    return files


def matches(root, files):
    for rel, meta in files.items():
        path = os.path.join(root, *rel.split("/"))
        if os.path.islink(path) or not os.path.isfile(path):
            return False
        if (meta["size"], meta["sha256"]) != sha256_file(path):
            return False
    return True


DIGESTS = {}  # type: dict  # path -> ((size, mtime, ctime, inode), {size, sha256})


def digest(path):
    """{size, sha256} of a file, hashed again only when it changed: a Ray run is looked at on every poll."""
    st = os.stat(path)
    stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if DIGESTS.get(path, (None,))[0] != stamp:
        size, sha = sha256_file(path)
        DIGESTS[path] = (stamp, {"size": size, "sha256": sha})
    return DIGESTS[path][1]


def ray_names(value, out):
    """Every string of Ray's snapshot, with those inside the JSON strings and the pickles it nests."""
    if isinstance(value, dict):
        out.update(value)
        value = list(value.values())
    if isinstance(value, list):
        for v in value:
            ray_names(v, out)
    elif isinstance(value, str):
        out.add(value)
        try:
            if value[:1] in "{[":
                ray_names(json.loads(value), out)
            elif HEX.match(value):  # Tune's cloudpickled objects: read, never loaded
                out.update(a for _, a, _ in pickletools.genops(bytes.fromhex(value)) if isinstance(a, str))
        except (ValueError, RecursionError, EOFError):  # not JSON, not a pickle: a plain string
            return out
    return out


def ray_tree(run, snap, top):
    """{relpath below top: {size, sha256}} of Ray's run directory as its snapshot sees it, or None while the
    snapshot does not parse (Ray is writing it). A directory below the run counts when the snapshot names its
    path (an absolute path ending in it will do: the run may have moved), so a checkpoint Ray is still
    writing, or has dropped, does not. One that counts holds files that count; its subdirectories count too,
    all of them when the snapshot names nothing inside it (a checkpoint), else the named ones only (a Tune
    trial). Links are never followed."""
    try:
        with open_file(snap) as fh:
            strings = ray_names(json.loads(fh.read()), set())
        paths = set()
        for parts in (str(n).strip("/").split("/") for n in strings):
            paths.update("/".join(parts[i:]) for i in range(len(parts)))
        inner = {p.rsplit("/", 1)[0] for p in paths if "/" in p}  # every prefix of a path (paths has suffixes)
        files, whole = {}, set()
        for here, dirs, names in os.walk(run):
            rel = os.path.relpath(here, run).replace(os.sep, "/")
            rel = "" if rel == "." else rel + "/"
            kept = [d for d in dirs if (rel in whole or rel + d in paths) and not os.path.islink(os.path.join(here, d))]
            whole.update(rel + d + "/" for d in kept if rel in whole or rel + d not in inner)
            dirs[:] = kept
            for name in names:
                path = os.path.join(here, name)
                if not os.path.islink(path) and os.path.isfile(path):
                    files[os.path.relpath(path, top).replace(os.sep, "/")] = digest(path)
        return files
    except (OSError, ValueError, RecursionError):  # a file went away under us: the next poll sees the rest
        return None


def sweep(marker):
    """SIGKILL every process whose environment holds `marker`: Ray's workers leave the head's process group,
    and the marker names this attempt's head only, so another Ray on the same host is never touched. In rounds:
    a raylet may start a worker while it is swept."""
    needle = marker.encode()
    for _ in range(10):
        found = False
        for pid in os.listdir("/proc") if os.path.isdir("/proc") else ():
            try:
                with open("/proc/" + pid + "/environ", "rb") as fh:
                    if pid.isdigit() and int(pid) != os.getpid() and needle in fh.read().split(b"\0"):
                        os.kill(int(pid), signal.SIGKILL)
                        found = True
            except OSError:
                pass
        if not found:
            return
        time.sleep(0.1)


def tail(path, size=600):
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(path) - size))
            return fh.read().decode(errors="replace").strip()
    except OSError as exc:
        return str(exc)


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


def write_json(path, data, mode=0o644):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.chmod(tmp, mode)  # an older file of that name keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def finite(value):
    """`value` with every non-finite float replaced by None (the API refuses NaN and Infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def read_progress(path):
    try:
        with open(path) as fh:
            loaded = finite(json.load(fh))
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(loaded, dict):
        return {}
    if len(json.dumps(loaded, separators=(",", ":"))) > MAX_PROGRESS:
        return {"truncated": True}
    return loaded


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
    gpus = [line.strip()[:200] for line in text.splitlines() if line.strip()][:16]
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
        self.claim_file = os.path.join(self.home, "claim.json")  # nonce and session: mode 0600
        self.patience = float(env.get("VASTFLEET_AGENT_PATIENCE", "900"))
        self.stopping = threading.Event()  # the control plane said stop: write nothing more
        self.done = threading.Event()  # the command is over: heartbeats end
        self.terminated = False  # SIGTERM: the container is going down; no finish
        self.committed, self.committed_dir, self.rejects, self.pending, self.hashes = -1, None, {}, None, {}
        self.hb_interval, self.poll, self.ckpt_interval, self.requested = 5.0, 1.0, 600.0, 0
        self.guard = self.head = None
        self.ray_dir = os.path.join(self.home, "ray")  # VASTFLEET_RAY_STORAGE: restored to this same path
        self.ray_job = self.ray_on = False
        self.ray_seen, self.ray_done, self.ray_files, self.ray_error = None, None, None, None
        self.beat = None
        self.phase = "starting"
        self.nonce, self.session, self.claimed = None, None, False

    # --- lifecycle ----------------------------------------------------------------------------------

    def main(self):
        log(f"agent {AGENT_VERSION} for job {self.job_id} attempt {self.attempt}, workdir {self.workdir}")
        try:
            return self.start()
        except Exception as exc:  # noqa: BLE001 - never die silently: say what broke, and whose fault it is
            line = traceback.extract_tb(exc.__traceback__)[-1].lineno
            what = f"agent failed: {type(exc).__name__}: {str(exc)[:300]} (agent.py line {line})"
            log(what)
            self.kill_job()
            if self.session:  # the job was handed over: whatever broke came with it
                self.finish(None, what, "job")
            elif not self.claimed:  # nothing of the job was seen yet: the instance's fault
                self.claim([], what)
            return 1

    def start(self):
        problem, gpus = None, []
        try:
            os.makedirs(self.ckpt_dir, exist_ok=True)
            self.load_claim()
        except OSError as exc:
            problem = f"the instance cannot write its workdir {self.workdir}: {exc}"
        if not problem:
            gpus, problem = check_gpu()
        if problem:
            log(problem)
        claim = self.claim(gpus, problem)
        if claim is None or problem:
            return 0
        log("GPUs: {}".format("; ".join(gpus)))
        self.hb_interval = float(claim.get("heartbeat_interval") or 5)
        self.poll = float(claim.get("poll_interval") or 1)
        self.ckpt_interval = float(claim.get("checkpoint_interval") or 600)
        self.ray_job = claim.get("runtime") == "ray"
        if len(gpus) < int(claim.get("gpus") or 1):
            return self.finish(None, f"no GPU visible: {len(gpus)} of {claim.get('gpus')} GPUs")
        self.write_control()
        self.phase = "restoring"
        self.beat = threading.Thread(target=self.heartbeats, name="heartbeat", daemon=True)
        self.beat.start()  # from the claim on, so a long restore or upload is not taken for a dead agent
        try:
            resume_dir = self.restore_patiently(claim.get("checkpoint"))
            self.sync(final=True)  # directories a previous container of this attempt left behind
        except StopOrder as exc:
            log(f"stopped: {exc}")
            return 0
        except (Transient, Rejected, Fatal, OSError) as exc:  # this instance could not get it: the host's fault
            return self.finish(None, f"checkpoint restore failed: {exc}")
        if self.committed_dir:
            resume_dir = self.committed_dir
        return self.run(claim, gpus, resume_dir)

    def load_claim(self):
        """The nonce (made and saved before the first claim) and the session, of this job and attempt."""
        try:
            with open(self.claim_file) as fh:
                saved = json.load(fh)
        except (OSError, ValueError):
            saved = {}
        if not isinstance(saved, dict) or saved.get("job") != self.job_id or saved.get("epoch") != self.attempt:
            saved = {}
        self.nonce, self.session = saved.get("nonce"), saved.get("session")
        if not self.nonce:
            self.nonce = secrets.token_urlsafe(32)
            self.save_claim()

    def save_claim(self):
        data = {"job": self.job_id, "epoch": self.attempt, "nonce": self.nonce, "session": self.session}
        write_json(self.claim_file, data, 0o600)

    def claim(self, gpus, problem):
        """The claim answer, or None when this attempt is over or cannot be claimed."""
        body = {"gpus": gpus, "instance_id": (os.environ.get("CONTAINER_ID") or "")[:64] or None}
        body["agent"] = AGENT_VERSION
        if problem:
            body["error"] = problem[:1000]
        if self.session:
            self.api.token = self.session
        else:
            body["nonce"] = self.nonce or secrets.token_urlsafe(32)
        self.claimed = True
        try:
            answer = self.api.call("claim", body, self.patience)
        except StopOrder as exc:
            log(f"this attempt is over, exiting without writing anything ({exc})")
            return None
        except (Fatal, Rejected, Transient) as exc:
            log(f"cannot claim the job: {exc}")
            return None
        if answer.get("session"):
            self.session = self.api.token = answer["session"]
            try:
                self.save_claim()  # at once: a restarted container must re-claim with it
            except OSError as exc:
                log(f"cannot save the session on disk: {exc}")
        return answer

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
        ray = self.ray_job
        if ray:  # one stable run identity across attempts: the script passes both to RunConfig
            os.makedirs(self.ray_dir, exist_ok=True)
            env.update(VASTFLEET_RAY_STORAGE=self.ray_dir, VASTFLEET_RAY_NAME=self.job_id, RAY_AUTH_MODE="token",
                       RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0",
                       RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")  # Ray's own switch for a loopback-only cluster
        signal.signal(signal.SIGTERM, self.on_sigterm)
        self.phase = "running"
        code, error = 0, None
        for phase in ("setup", "run"):
            script = claim.get(phase)
            if phase == "run" and ray:  # after setup, which may install Ray
                error = self.start_ray(len(gpus), env)
                if error:
                    log(error)
                    return self.finish(127 if "not on PATH" in error else None, error, "job")
                self.ray_on = True
            if not script:
                continue
            log(f"{phase}: starting")
            try:
                code = self.supervise(script, env)
            except CannotStart as exc:
                self.stop_ray()
                log(f"cannot start the job's {phase}: {exc}")
                return self.finish(None, f"cannot start the job's {phase}: {exc}", "job")
            if code is None or code != 0:
                error = "setup failed" if phase == "setup" and code else self.ray_error
                break
        self.stop_ray()
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

    def finish(self, code, error, fault=None):
        """Report the attempt's end; without an exit code, `fault` says whose it is ("host" by default)."""
        self.done.set()  # no heartbeat after the attempt's end
        body = {"exit_code": code, "error": error[:1000] if error else None}
        if fault:
            body["fault"] = fault
        try:
            answer = self.api.call("finish", body, max(self.patience, 60))
            log(
                "reported {}: job is {}".format(
                    f"exit {code}" if code is not None else error, answer.get("state")
                )
            )
        except (StopOrder, Fatal, Rejected, Transient) as exc:
            log(f"could not report the exit: {exc}")
        return 0

    # --- the command --------------------------------------------------------------------------------

    def spawn(self, argv, env, out=None):
        """`argv` under a guard process that leads a new process group and kills it if the agent dies."""
        return subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--guard"] + argv,
            cwd=self.workdir,
            env=env,
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=out and subprocess.STDOUT,
            start_new_session=True,
        )

    def supervise(self, script, env):
        """Run one shell script under the guard; returns its exit code, or None when stopped."""
        shell = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
        try:
            self.guard = self.spawn([shell, "-c", script], env)
        except (OSError, ValueError, TypeError) as exc:  # a NUL in the env or script, a bad name...
            raise CannotStart(f"{type(exc).__name__}: {exc}")
        last_sync = 0.0
        while self.guard.poll() is None:
            if self.stopping.is_set():
                self.kill_job()
                return None
            if self.head is not None and self.head.poll() is not None and not self.ray_error:
                why = tail(self.head_log, 400)
                self.ray_error = f"the Ray head exited ({self.head.returncode}) during the run: {why}"
                log(self.ray_error)
                self.kill_job()  # the job shares the head's fate, as the head shares the job's
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
        """This attempt's Ray head, under a guard of its own: free ports, loopback only, the attempt's token.
        Sets RAY_ADDRESS from the file the head writes; returns why it did not come up (Ray's words), or None."""
        ray = shutil.which("ray", path=env.get("PATH"))
        if not ray:
            return "runtime ray: `ray` is not on PATH in this image; install ray there or use runtime: plain"
        # Ray's Unix sockets sit ~70 bytes below its temp dir and a socket path may not pass 107: a short one,
        # private to this workdir and attempt, so two jobs on one host never share a session or a socket.
        self.ray_tmp = "/tmp/vfray-" + hashlib.sha256((self.home + self.attempt).encode()).hexdigest()[:12]
        shutil.rmtree(self.ray_tmp, ignore_errors=True)  # a previous container's: its processes died with it
        cmd = [ray, "start", "--head", "--block", "--port=0", "--dashboard-port=0", "--include-dashboard=false",
               "--dashboard-agent-listen-port=0", "--disable-usage-stats", "--temp-dir=" + self.ray_tmp,
               f"--num-gpus={gpus}"]
        cpus = os.environ.get("VASTFLEET_CPUS", "")
        cmd += [f"--num-cpus={max(1, int(float(cpus)))}"] if re.match(r"^\d+(\.\d+)?$", cpus) else []
        head_env = dict(env, VASTFLEET_RAY_HEAD=self.ray_tmp, AUTOSCALER_METRIC_PORT="0")
        head_env.pop("RAY_ADDRESS", None)
        self.head_log = os.path.join(self.home, "ray-head.log")
        log("starting Ray's head: " + " ".join(cmd[1:]))
        with open(self.head_log, "wb") as out:
            self.head = self.spawn(cmd, head_env, out)
        where_file, deadline = os.path.join(self.ray_tmp, "ray_current_cluster"), time.time() + HEAD_WAIT
        while not self.stopping.is_set():
            try:
                with open(where_file) as fh:
                    addr = fh.read().strip()
            except OSError:
                addr = ""
            if re.match(r"^[\w.\-\[\]:]+:\d+$", addr):
                env["RAY_ADDRESS"] = addr
                log(f"Ray's head is up at {addr}")
                return None
            if self.head.poll() is not None or time.time() > deadline:
                why = f"exited with {self.head.returncode}" if self.head.poll() is not None else \
                    f"did not come up in {HEAD_WAIT:.0f} s"
                self.stop_ray()
                return f"runtime ray: `ray start --head` {why}: {tail(self.head_log)}"
            time.sleep(0.2)
        return None

    def stop_ray(self):
        """End this attempt's head and every process of it, and nothing else (never a machine-wide `ray stop`)."""
        head, self.head = self.head, None
        if head is None:
            return
        try:
            os.killpg(head.pid, signal.SIGKILL)  # the job is over: nothing in Ray needs a graceful end
        except OSError:
            pass
        head.wait()
        sweep("VASTFLEET_RAY_HEAD=" + self.ray_tmp)
        shutil.rmtree(self.ray_tmp, ignore_errors=True)

    # --- heartbeats ---------------------------------------------------------------------------------

    def heartbeats(self):
        while not self.done.is_set() and not self.stopping.is_set():
            try:
                if self.beat_once():
                    return
            except Exception as exc:  # noqa: BLE001 - a bad answer or a full disk must not end the heartbeats
                log(f"heartbeat: {type(exc).__name__}: {exc}")
            self.done.wait(self.hb_interval)

    def beat_once(self):
        """One heartbeat; True when the control plane says stop."""
        body = {"progress": read_progress(self.progress_file), "ckpt_step": self.committed, "phase": self.phase,
                "pending_uploads": len(self.unsent()), "pending": self.pending}
        try:
            try:
                ans = self.api.once("heartbeat", body)
            except Rejected as exc:  # whatever the API disliked, liveness comes first: send it bare
                log(f"heartbeat: {exc} (sent again without progress)")
                body["progress"] = {}
                ans = self.api.once("heartbeat", body)
        except StopOrder as exc:
            self.stop(str(exc))
            return True
        except (Transient, Rejected, Fatal) as exc:
            log(f"heartbeat: {exc}")
            return False
        if ans.get("action") == "stop" and ans.get("upload"):  # cancelled: end the job, keep what it wrote
            log("cancelled: stopping the job, then uploading its checkpoints")
            self.kill_job()
            return True
        if ans.get("action") == "stop":
            self.stop("the control plane says stop")
            return True
        changed = ans.get("action") == "checkpoint"
        self.requested += 1 if changed else 0
        interval = ans.get("checkpoint_interval")
        if interval and float(interval) != self.ckpt_interval:
            self.ckpt_interval, changed = float(interval), True
        if changed:
            self.write_control()
        self.hb_interval = float(ans.get("heartbeat_interval") or self.hb_interval)
        return False

    def write_control(self):
        write_json(
            self.control_file,
            {"checkpoint_interval": self.ckpt_interval, "checkpoint_requested": self.requested},
        )

    # --- checkpoints --------------------------------------------------------------------------------

    def restore_patiently(self, cp):
        """restore_latest, tried again while it fails for a reason that passes (storage or the network down)
        until the agent's patience runs out; the heartbeats go on meanwhile (phase `restoring`)."""
        deadline = time.time() + self.patience
        while True:
            try:
                return self.restore_latest(cp)
            except Transient as exc:
                if self.stopping.is_set():
                    raise StopOrder("the control plane said stop during the restore")
                if time.time() >= deadline:
                    raise
                log(f"checkpoint restore: {exc} (retrying)")
                self.stopping.wait(2.0)

    def restore_latest(self, cp):
        """Restore the latest checkpoint; one that does not verify is reported, and the previous one the API
        answers is tried instead. Returns the restored directory, or None (starting fresh)."""
        while cp:
            try:
                return self.restore(cp)
            except BadCheckpoint as exc:
                log(f"checkpoint step {cp.get('step')} does not verify: {exc}")
                body = {"step": cp.get("step"), "prefix": cp.get("prefix"), "reason": str(exc)[:1000]}
                ans = self.api.call("restore-failed", body, 300)
                if ans.get("verified"):  # intact in storage: this instance could not read it (its fault)
                    raise Fatal(f"{exc} (the stored checkpoint verifies)")
                cp = ans.get("checkpoint")
                log(f"falling back to checkpoint step {cp['step']}" if cp else "no verified checkpoint is left")
        log("no checkpoint to restore: starting fresh")
        return None

    def restore(self, cp):
        step, files = int(cp["step"]), cp["files"]
        ray = self.ray_job and all(rel.startswith("ray/") for rel in files)  # a Ray run: back to its own path
        if ray:
            self.ray_files = {rel: {"size": int(m["size"]), "sha256": m["sha256"]} for rel, m in files.items()}
        for s, path in [(step, self.ray_dir)] if ray else ckpt_dirs(self.ckpt_dir):
            if s == step and matches(self.home if ray else path, files):
                log(f"checkpoint step {step} already here: {path}")
                self.committed, self.committed_dir = step, path
                return path
        target = self.ray_dir if ray else os.path.join(self.ckpt_dir, str(step))
        tmp = os.path.join(self.ckpt_dir, f".restore-{step}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for rel, meta in sorted(files.items()):
            dest = os.path.join(tmp, *rel.split("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            size, sha = int(meta["size"]), meta["sha256"]
            try:
                get_file(meta["url"], dest, size, sha, rel)
            except Denied:  # the URLs expired during a long restore: fresh ones, once
                fresh = self.api.call("presign-download", {}, 120).get("checkpoint") or {}
                try:
                    get_file(((fresh.get("files") or {}).get(rel) or {}).get("url") or "", dest, size, sha, rel)
                except (Denied, ValueError) as exc:
                    raise BadCheckpoint(f"{rel}: download refused ({exc})")
        if os.path.exists(target):
            os.replace(target, os.path.join(self.ckpt_dir, f".replaced-{step}-{int(time.time())}"))
        os.replace(os.path.join(tmp, "ray") if ray else tmp, target)
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"restored checkpoint step {step} ({len(files)} files, verified)")
        self.committed, self.committed_dir = step, target
        return target

    def unsent(self):
        """Complete checkpoint directories above the last commit, not given up on, by step."""
        return [(s, p) for s, p in ckpt_dirs(self.ckpt_dir) if s > self.committed and self.rejects.get(s, 0) < MAX_REJECTS]

    def sync(self, final=False):
        """Upload and commit the newest complete directory above the last commit (all of them if final).
        While the job runs, a failing upload is given up quickly (the next poll tries again): a newer
        checkpoint written meanwhile is the one uploaded next, and the one heartbeats name as pending."""
        while self.ray_on and not self.stopping.is_set():
            try:
                self.ray_sync(final)
                break
            except Transient as exc:
                if not final:
                    raise
                log(f"{exc} (retrying)")
                time.sleep(1.0)
        while not self.stopping.is_set():
            pending = self.unsent()
            if not pending:
                return
            step, path = pending[-1]
            if not final:
                return self.upload(step, path, quick=True)
            try:
                self.upload(step, path)
            except Transient as exc:
                log(f"{exc} (retrying)")
                time.sleep(1.0)

    def hashed(self, path):
        """dir_files(path), kept while the directory is unchanged (a retry does not hash a big one again)."""
        st = os.lstat(path)
        key = (path, st.st_ino, st.st_mtime_ns)
        if self.hashes.get(path, (None,))[0] != key:
            self.hashes = {path: (key, dir_files(path))}
        return self.hashes[path][1]

    def ray_sync(self, final):
        """Ray's run snapshot, once it changed and then stayed put for a poll (Ray writes it in place), becomes
        a checkpoint of the files it names, restored to this same path on the next instance."""
        run = os.path.join(self.ray_dir, self.job_id)
        try:
            names = os.listdir(run)
        except OSError:
            return
        snaps = [n for n in names if n == RAY_TRAIN] or sorted(
            n for n in names if n.startswith("experiment_state-") and n.endswith(".json"))
        if not snaps:
            return
        st = os.stat(os.path.join(run, snaps[-1]))
        key, seen, self.ray_seen = (st.st_size, st.st_mtime_ns), self.ray_seen, (st.st_size, st.st_mtime_ns)
        if key == self.ray_done or (key != seen and not final):
            return
        files = ray_tree(run, os.path.join(run, snaps[-1]), self.home)
        if files is None or files == self.ray_files:  # unreadable for now, or what is committed already
            self.ray_done = key if files else None
            return
        step = self.committed + 1
        while self.rejects.get(step, 0) >= MAX_REJECTS:
            step += 1
        try:
            self.upload(step, self.home, files)
        except Transient:
            if self.rejects.get(step, 0) >= MAX_REJECTS:
                self.ray_done = key  # given up on this snapshot; the next one is tried afresh
            raise
        if self.committed == step:
            self.ray_done, self.ray_files = key, files

    def upload(self, step, path, files=None, quick=False):
        ray_tree = files is not None
        try:
            files = self.hashed(path) if files is None else files
        except OSError as exc:
            files = {}
            log(f"checkpoint {path} cannot be read: {exc}")
        if files is None:
            log(f"checkpoint {path} is a link, or holds a link, leading out of it: skipped, nothing uploaded")
        elif not files:
            log(f"checkpoint {path} is empty or unreadable: skipped")
        if not files:
            self.rejects[step] = MAX_REJECTS
            return
        manifest = {"step": step, "files": files}
        # Told in heartbeats until committed: a salvage copies this directory off a stopped disk and checks it
        # against the digest (the manifest's, as the control plane names its storage key). Ray's tree is no
        # directory of its own (files picked across the run's): not salvaged, its next snapshot is uploaded.
        digest = hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        self.pending = None if ray_tree else {
            "step": step, "dir": os.path.basename(path), "digest": digest[:12], "files": len(files),
            "bytes": sum(m["size"] for m in files.values())}
        try:
            ans = self.api.call("presign-upload", manifest, max(2.0, 2 * self.poll) if quick else 120)
            urls, sent = ans.get("files") or {}, 0
            for rel, meta in sorted(files.items()) if not ans.get("committed") else ():
                if self.stopping.is_set():
                    return
                if urls[rel].get("stored"):  # the job's committed checkpoints hold these bytes: not sent again
                    continue
                sent += meta["size"]
                src = os.path.join(path, *rel.split("/"))
                try:
                    put_file(urls[rel]["url"], urls[rel].get("headers") or {}, src, meta["size"],
                             2 if quick else 4)
                except Denied:  # the URLs expired during a long upload: fresh ones, once
                    urls = self.api.call("presign-upload", manifest, 120).get("files") or {}
                    put_file(urls[rel]["url"], urls[rel].get("headers") or {}, src, meta["size"])
            if self.stopping.is_set():
                return
            if not ans.get("committed"):
                self.api.call("commit", manifest, 120, timeout=900)  # the API reads big objects back
        except Transient as exc:  # storage or the API unavailable: not the checkpoint's fault, never given up
            raise Transient(f"checkpoint step {step} not committed yet: {exc}")
        except (Rejected, Denied, OSError, KeyError) as exc:
            self.rejects[step] = self.rejects.get(step, 0) + 1
            raise Transient(
                f"checkpoint step {step} not committed ({self.rejects[step]}/{MAX_REJECTS}): {exc}"
            )
        self.committed, self.committed_dir, self.pending = step, path, None
        size = sum(m["size"] for m in files.values())
        log(f"committed checkpoint step {step} ({len(files)} files, {size} bytes, {sent} uploaded)")


def guard(argv):
    """The job's process-group leader: runs the command, and kills the group if the agent dies."""
    try:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    except OSError as exc:
        log(f"cannot start {argv[0]}: {exc}")
        os._exit(127)

    gone = threading.Event()

    def watch():
        try:
            while os.read(0, 4096):  # EOF when the agent is gone
                pass
        except OSError:
            pass
        gone.set()
        if child.poll() is None:
            ray_tmp = os.environ.get("VASTFLEET_RAY_HEAD")
            if ray_tmp:  # Ray's workers live in process groups of their own
                sweep("VASTFLEET_RAY_HEAD=" + ray_tmp)
                shutil.rmtree(ray_tmp, ignore_errors=True)
            os.killpg(0, signal.SIGKILL)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    code = child.wait()
    if gone.is_set():  # the sweep may have ended the child: let the watcher finish (it ends this process)
        watcher.join()
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
