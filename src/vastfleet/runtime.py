"""The whole control plane in one process, built from `Settings` (env prefix VASTFLEET_).

`build_runtime(settings) -> Runtime`; `Runtime.start()` brings up, in order: Redis (the given URL; else an
embedded `redis-server` child when one is on the PATH; else an in-process fakeredis, with a LOUD warning:
nothing survives a restart), the JobStore, the marketplace adapter, the checkpoint store (a local directory
served by the API), the API (users + agents + /metrics) on a thread, the RQ action worker(s) on threads,
and the scheduler loop on a thread. `Runtime.stop()` stops them in reverse order and ends every child it
started. Each part can be switched off (`run_api`, `run_scheduler`, `workers=0`) so that a deployment, or a
test that kills the scheduler with SIGKILL, runs them in separate processes sharing one Redis.

`python -m vastfleet.runtime` runs it in the foreground from the environment until SIGTERM/SIGINT.
Never holds scheduling logic; never imports `vastfleet.sim`.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import redis
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from vastfleet.agent.tokens import TokenSigner
from vastfleet.api.agent_routes import AgentHooks, AgentSettings, agent_router
from vastfleet.api.app import create_app
from vastfleet.api.context import ApiContext
from vastfleet.api.serve import ServerThread
from vastfleet.datadir import EmbeddedRedis, default_data_dir, lasting_secret
from vastfleet.errors import VastfleetError
from vastfleet.market.protocol import Marketplace
from vastfleet.queue import JobStore
from vastfleet.queue.actions import ACTION_QUEUES, raw_connection
from vastfleet.scheduler import actions as act
from vastfleet.scheduler.exclusions import CheckpointCosts, FleetMemory, HostExclusions, JobHazards
from vastfleet.scheduler.labels import label_for
from vastfleet.scheduler.loop import LoopConfig, SchedulerLoop
from vastfleet.scheduler.plan import PlanParams
from vastfleet.scheduler.policy import checkpoint_interval
from vastfleet.scheduler.spend import SpendLedger
from vastfleet.scheduler.supervise import Timings
from vastfleet.spec.job import Job
from vastfleet.spec.market import CreateRequest
from vastfleet.storage.local import LocalCheckpointStore

log = logging.getLogger("vastfleet.runtime")


class Settings(BaseSettings):
    """Every knob of the control plane. Production defaults; tests and the demo pass small timings."""

    model_config = SettingsConfigDict(env_prefix="VASTFLEET_", extra="ignore", populate_by_name=True)

    redis_url: str | None = None  # None: embedded redis-server child, else fakeredis (loud warning)
    prefix: str = "vf"
    # embedded Redis data, local checkpoints and the secrets below when not given; None: the default, which
    # lasts ($XDG_DATA_HOME/vastfleet or ~/.local/share/vastfleet): a restart loses no checkpoint, no token
    data_dir: Path | None = None
    # API
    run_api: bool = True
    api_host: str = "127.0.0.1"
    api_port: int = 8765  # 0: a free port
    # the users' bearer token (VASTFLEET_TOKEN, as the CLI reads it); empty: generated for this run only
    api_token: str = Field(default="", validation_alias=AliasChoices("api_token", "VASTFLEET_TOKEN", "VASTFLEET_API_TOKEN"))
    public_url: str | None = None  # how instances reach the API; default http://api_host:port
    # marketplace
    vast_api_key: str = ""  # empty: VAST_API_KEY or the vastai key file, server from VASTFLEET_MARKET_URL
    vast_url: str = "https://console.vast.ai"  # with vast_api_key
    vast_timeout_s: float = 30.0  # one marketplace request's bound (a slow answer counts as a failure)
    # secrets of the control plane (never sent to an instance)
    # empty: made once and kept in <data_dir>/secrets (a split control plane sets both, shared by its parts)
    agent_secret: str = ""
    storage_secret: str = ""
    secrets_dir: Path | None = None  # job secrets as files <NAME> (else VASTFLEET_SECRET_<NAME> in the env)
    checkpoint_dir: Path | None = None  # the local store (default: <data_dir>/checkpoints)
    s3_bucket: str = ""  # set: checkpoints in this S3-compatible bucket (credentials: the usual AWS_* env)
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_prefix: str = ""
    # scheduler
    run_scheduler: bool = True
    workers: int = 2  # RQ action worker threads (0: none in this process); creates are dequeued first
    inline_actions: bool = False  # run create/destroy in the loop's thread instead of RQ
    pass_interval_s: float = 5.0
    lease_ttl_s: float = 30.0
    heartbeat_interval_s: float = 5.0  # told to the agent
    heartbeat_lost_s: float = 60.0
    boot_timeout_s: float = 900.0
    scheduling_timeout_s: float = 600.0
    outbid_wait_s: float = 10.0  # a paused bid may come back by itself: wait (since its last beat), then decide
    gone_grace_s: float = 30.0
    create_lock_s: float = 120.0  # one create call's bound; a create killed mid-way is re-driven after this
    action_requeue_s: float = 60.0  # a queued action no worker took in this long is queued again
    checkpoint_interval_s: float = 600.0  # `interval: auto` while no scheduler runs (here or publishing in Redis)
    host_exclusion_s: float = 6 * 3600.0  # a host that failed us is not placed on again for this long
    # money: caps on new rentals (None: none); running work is never stopped by them
    max_usd_per_hour: float | None = None  # the whole fleet's $/h
    max_usd_per_day: float | None = None  # $ spent per UTC day
    max_usd_per_month: float | None = None  # $ spent per UTC month
    credit_reserve_usd: float = 5.0  # no new rental would leave the account's credit under this
    # salvage: the marketplace's cloud connection (vast `show connections`) whose root is the checkpoint store
    # (the S3 bucket, or the local store's directory); empty: no salvage, a lost attempt's unsent work is lost
    salvage_connection: str = ""
    salvage_root: str = ""  # where the store's keys start in that connection (default: the S3 key prefix)
    agent_poll_s: float = 1.0
    log_level: str = "INFO"
    log_format: str = "text"  # text (readable) or json (one object per line); set up by `serve_forever`

    def timings(self) -> Timings:
        return Timings(heartbeat_lost_s=self.heartbeat_lost_s, heartbeat_interval_s=self.heartbeat_interval_s,
                       boot_timeout_s=self.boot_timeout_s,
                       scheduling_timeout_s=self.scheduling_timeout_s, gone_grace_s=self.gone_grace_s)


def _quiet_worker_class() -> Any:
    """An RQ SimpleWorker that runs in a thread: no signal handlers (main thread only), timer timeouts."""
    from rq import SimpleWorker
    from rq.timeouts import TimerDeathPenalty

    class ThreadWorker(SimpleWorker):
        death_penalty_class = TimerDeathPenalty

        def _install_signal_handlers(self) -> None:
            return None

    return ThreadWorker


def work_loop(worker: Any, stop: threading.Event, idle_s: float = 0.1, outage_s: float = 1.0) -> None:
    """An action worker's loop: drain the queues, wait a moment, again, until `stop`. Redis unreachable (a
    restart, a failover) is one warning per outage, retried every `outage_s`, not a traceback every pass."""
    outage = False
    while not stop.is_set():
        try:
            worker.work(burst=True, logging_level="WARNING")
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if not outage:
                log.warning("action worker: Redis unreachable (%s); retrying every %.0f s", exc, outage_s)
            outage = True
            stop.wait(outage_s)
            continue
        except Exception:
            log.exception("action worker failed")
        if outage:
            log.info("action worker: Redis reachable again")
            outage = False
        stop.wait(idle_s)


class Runtime:
    def __init__(self, settings: Settings, market: Marketplace | None = None) -> None:
        self.settings = settings
        self._market = market
        self.data_dir = settings.data_dir or default_data_dir()
        self.embedded: EmbeddedRedis | None = None
        self.redis: redis.Redis | None = None
        self.store: JobStore | None = None
        self.market: Marketplace | None = None
        self.ckpt: Any = None  # LocalCheckpointStore or S3CheckpointStore
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.tokens = TokenSigner(lasting_secret(self.data_dir, "agent_secret", settings.agent_secret))
        self.storage_secret = lasting_secret(self.data_dir, "storage_secret", settings.storage_secret)
        self.server: ServerThread | None = None
        self.loop: SchedulerLoop | None = None
        self.sweeps: Any = None  # vastfleet.sweeps.loop.SweepLoop: the sweeps' driver, its own lease
        self.job_hazards: JobHazards | None = None
        self.ctx: act.ActionContext | None = None
        self.metrics: Any = None
        self.api_token = settings.api_token or secrets.token_urlsafe(24)
        self.context_key = settings.prefix  # RQ jobs name it; every process of one control plane registers it
        self._workers: list[tuple[threading.Thread, threading.Event, Any]] = []
        self.public_url = settings.public_url or ""
        self.redis_kind = ""

    # --- parts ------------------------------------------------------------------------------------------

    def _connect_redis(self) -> redis.Redis:
        if self.settings.redis_url:
            self.redis_kind = "external"
            return redis.Redis.from_url(self.settings.redis_url, decode_responses=True)
        if shutil.which("redis-server"):
            self.embedded = EmbeddedRedis(self.data_dir / "redis").start()
            self.redis_kind = "embedded redis-server"
            return redis.Redis.from_url(self.embedded.url, decode_responses=True)
        import fakeredis

        banner = "!" * 100
        log.warning("%s\nNO redis-server ON THE PATH: using an IN-PROCESS FAKE REDIS. Nothing survives a restart;"
                    " not for production (install redis-server or set VASTFLEET_REDIS_URL).\n%s", banner, banner)
        print("WARNING: no redis-server on the PATH; using an in-process fake Redis (nothing persists)",
              file=sys.stderr)
        self.redis_kind = "fakeredis (in-process, NOT persistent)"
        return fakeredis.FakeRedis(decode_responses=True)

    def _checkpoint_interval(self, job: Job, costs: CheckpointCosts) -> float | None:
        """`interval: auto`: Young/Daly from the scheduler's hazard estimate and the job's measured upload time:
        this process's scheduler when it runs one, else the one another process published in Redis (None:
        no scheduler is running, the API's default applies). Runs in the agent API's requests."""
        cadence = getattr(self.loop.placer, "checkpoint_interval", None) if self.loop is not None else None
        try:
            if cadence is not None:
                return float(cadence(job, costs.cost_s(job.id)))
            hazard = self.job_hazards.hazard(job.id) if self.job_hazards is not None else None
            return None if hazard is None else checkpoint_interval(costs.cost_s(job.id), hazard)
        except (redis.RedisError, ValueError, RuntimeError):  # RuntimeError: the loop's thread resized a dict
            log.warning("checkpoint cadence unavailable for %s", job.id, exc_info=True)
            return None

    def _build_market(self) -> Marketplace:
        if self._market is not None:
            return self._market
        from vastfleet.market.config import marketplace_from_env
        from vastfleet.market.vast import VastMarketplace

        count = getattr(self.metrics, "market_call", None)

        def on_call(operation: str, code: int | str, seconds: float) -> None:
            """Every marketplace request: logged at DEBUG (no arguments: they may hold an onstart env), counted."""
            log.debug("market call %s -> %s in %.2fs", operation, code, seconds)
            if count is not None:
                count(operation, code, seconds)

        if not self.settings.vast_api_key:
            # Where the vastai package looks: VAST_API_KEY, then its key file; VASTFLEET_MARKET_URL for the server.
            return marketplace_from_env(on_call=on_call, timeout_s=self.settings.vast_timeout_s)
        return VastMarketplace(self.settings.vast_api_key, self.settings.vast_url, on_call=on_call,
                               timeout_s=self.settings.vast_timeout_s)

    def _checkpoint_store(self) -> Any:
        s = self.settings
        if s.s3_bucket:
            from vastfleet.storage.s3 import S3CheckpointStore

            return S3CheckpointStore(s.s3_bucket, endpoint_url=s.s3_endpoint_url, region=s.s3_region,
                                     key_prefix=s.s3_prefix)
        return LocalCheckpointStore(s.checkpoint_dir or self.data_dir / "checkpoints", self.storage_secret)

    def build_request(self, job: Job, epoch: int, bid: float | None) -> CreateRequest:
        """What to rent for (job, epoch): the image, the onstart with the agent and its per-attempt token."""
        label = label_for(job.id, epoch, self.settings.prefix)
        token = self.tokens.issue(job.id, epoch, label)
        onstart, env = _onstart(self.public_url, job, epoch, token)
        return CreateRequest(image=job.spec.image, disk_gb=job.spec.resources.disk_gb, label=label,
                             onstart=onstart, env=env, ports=list(job.spec.ports), bid=bid)

    # --- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> Runtime:
        try:
            return self._start()
        except BaseException:
            self.stop()  # a half-started control plane leaves nothing running
            raise

    def _start(self) -> Runtime:
        s = self.settings
        logging.getLogger("vastfleet").setLevel(s.log_level.upper())
        self.redis = self._connect_redis()
        self.store = JobStore(self.redis, prefix=s.prefix)
        self.job_hazards = JobHazards(self.redis, s.prefix, ttl_s=max(60.0, 6 * s.pass_interval_s))
        try:
            from vastfleet.metrics import FleetMetrics

            self.metrics = FleetMetrics()
            self.metrics.attach_store(self.store)
        except Exception:
            log.warning("metrics unavailable", exc_info=True)
            self.metrics = None
        split = not (s.run_api and (s.run_scheduler or s.workers))
        for secret in ("agent_secret", "storage_secret"):
            if split and not getattr(s, secret):
                log.warning("VASTFLEET_%s is not set: the one kept in %s is used; processes of this control plane"
                            " on other machines must be given the same one", secret.upper(), self.data_dir)
        if s.run_api and not s.api_token:
            log.warning("VASTFLEET_TOKEN is not set: the API uses a one-off random token (not shown); set"
                        " VASTFLEET_TOKEN to call it from the CLI")
        if s.run_api:
            from vastfleet.api.secrets import SecretSource

            secrets_source = SecretSource(directory=s.secrets_dir)
            self.ckpt = self._checkpoint_store()
            costs = CheckpointCosts(self.redis, s.prefix)
            self.ckpt = costs.watch(self.ckpt)  # each job's upload time: the cost in the Young/Daly cadence
            hooks = AgentHooks(checkpoint_interval=lambda job: self._checkpoint_interval(job, costs),
                               resolve_secrets=secrets_source.resolve, on_commit=costs.on_commit)
            if self.metrics is not None:
                from vastfleet.metrics.feed import CommitFeed

                commits = CommitFeed(self.metrics)
                self.ckpt = commits.watch(self.ckpt)  # times each upload from its first presigned URL

                def on_commit(job: Job, ref: Any) -> None:
                    costs.on_commit(job, ref)
                    commits.on_commit(job, ref)

                hooks.on_commit = on_commit
            agent = agent_router(self.store, self.ckpt, self.tokens, hooks,
                                 AgentSettings(heartbeat_interval_s=s.heartbeat_interval_s,
                                               default_checkpoint_interval_s=s.checkpoint_interval_s,
                                               poll_interval_s=s.agent_poll_s))
            metrics_app = None
            if self.metrics is not None:
                from vastfleet.metrics import metrics_asgi_app

                metrics_app = metrics_asgi_app(self.metrics)
            app = create_app(ApiContext(store=self.store, token=self.api_token, agent_router=agent,
                                        metrics_app=metrics_app, extra={"metrics": self.metrics,
                                                                   "secrets": secrets_source}))
            self.server = ServerThread(app, s.api_host, s.api_port).start()
            self.public_url = s.public_url or self.server.url
            if isinstance(self.ckpt, LocalCheckpointStore):
                self.ckpt.base_url = self.public_url.rstrip("/")
        if s.run_scheduler or s.workers:
            self.market = self._build_market()
            self.ctx = act.ActionContext(store=self.store, market=self.market, redis=self.redis,
                                         build_request=self.build_request, prefix=s.prefix,
                                         create_lock_s=s.create_lock_s, spend=SpendLedger(self.redis, s.prefix),
                                         ckpt=(self.ckpt or self._checkpoint_store()) if s.salvage_connection else None,
                                         salvage_connection=s.salvage_connection,
                                         salvage_root=s.salvage_root or s.s3_prefix.strip("/") + "/"
                                         if s.s3_prefix.strip("/") else s.salvage_root)
            act.register(self.context_key, self.ctx)
        for i in range(s.workers if not s.inline_actions else 0):
            self._start_worker(i)
        if s.run_scheduler:
            assert self.ctx is not None and self.market is not None
            params = PlanParams(timings=s.timings(), outbid_wait_s=s.outbid_wait_s, label_prefix=s.prefix,
                                max_usd_per_hour=s.max_usd_per_hour, max_usd_per_day=s.max_usd_per_day,
                                max_usd_per_month=s.max_usd_per_month, credit_reserve_usd=s.credit_reserve_usd,
                                salvage=bool(s.salvage_connection))
            self.loop = SchedulerLoop(self.store, self.market, self.redis, self.ctx,
                                      config=LoopConfig(interval_s=s.pass_interval_s, lease_ttl_s=s.lease_ttl_s,
                                                        params=params),
                                      inline=s.inline_actions, context_key=self.context_key, metrics=self.metrics,
                                      requeue_s=s.action_requeue_s,
                                      exclusions=HostExclusions(self.redis, s.prefix, s.host_exclusion_s),
                                      job_hazards=self.job_hazards, memory=FleetMemory(self.redis, s.prefix))
            self.loop.start()
            from vastfleet.sweeps.loop import SweepLoop

            self.sweeps = SweepLoop(self.store, self.market, self.redis, prefix=s.prefix, interval_s=s.pass_interval_s,
                                    lease_ttl_s=s.lease_ttl_s).start()
        return self

    def _start_worker(self, index: int) -> None:
        assert self.redis is not None
        from rq import Queue

        conn = raw_connection(self.redis)
        queues = [Queue(name, connection=conn) for name in ACTION_QUEUES]
        worker = _quiet_worker_class()(queues, connection=conn, name=f"{self.context_key}-{secrets.token_hex(3)}-w{index}")
        stop = threading.Event()
        thread = threading.Thread(target=work_loop, args=(worker, stop), name=f"vastfleet-worker-{index}",
                                  daemon=True)
        thread.start()
        self._workers.append((thread, stop, worker))

    def stop(self) -> None:
        if self.sweeps is not None:
            self.sweeps.stop()
        if self.loop is not None:
            self.loop.stop()
        for _, stop, worker in self._workers:
            stop.set()
            worker._stop_requested = True  # RQ's own flag: ends its loop after the job in hand
        for thread, _, _ in self._workers:
            thread.join(10)
        self._workers.clear()
        act.unregister(self.context_key)
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.redis is not None:
            try:
                self.redis.close()
            except Exception:
                log.debug("closing redis failed", exc_info=True)
        if self.embedded is not None:
            self.embedded.stop()
            self.embedded = None

    def __enter__(self) -> Runtime:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _onstart(api_url: str, job: Job, epoch: int, token: str) -> tuple[str, dict[str, str]]:
    """The onstart command and the instance env. The onstart token travels in the env given at create time (the
    onstart text is stored by the platform and must hold no secret); vast lists that env with the instance, so
    the token opens one claim only, and the session secret that claim answers is what the agent uses after."""
    from vastfleet.agent.onstart import agent_env, build_onstart

    return build_onstart(api_url), agent_env(api_url, token, job.id, epoch, cpus=job.offer_cpus)


def build_runtime(settings: Settings | None = None, market: Marketplace | None = None) -> Runtime:
    return Runtime(settings or Settings(), market)


def serve_forever(settings: Settings | None = None) -> int:
    """Run the control plane in the foreground until SIGTERM/SIGINT (what `vastfleet server` runs), logging
    to stderr in the settings' format and level."""
    from vastfleet import logs

    settings = settings or Settings()
    logs.setup(settings.log_level, settings.log_format)
    runtime = build_runtime(settings)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    runtime.start()
    api = f"http://{settings.api_host}:{runtime.server.port}" if runtime.server is not None else "off"
    logs.event(log, "started", f"API {api} (agents reach it at {runtime.public_url or '-'}), Redis"
               f" {runtime.redis_kind}, scheduler {'on' if runtime.loop else 'off'},"
               f" {len(runtime._workers)} action workers")
    try:
        stopping.wait()
    finally:
        runtime.stop()
    return 0


def main() -> int:
    try:
        return serve_forever()
    except VastfleetError as exc:
        print(f"vastfleet: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
