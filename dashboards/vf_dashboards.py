"""The vastfleet dashboards: Cost, Preemptions and recovery, Queue and jobs, Fleet (and Sweeps, vf_sweeps.py).

Queries use `max` over the gauges every API replica reports alike (read from the job store at scrape
time) and `sum` over what only the scheduler leader records. `or vector(0)` appears only where zero is the
true answer (an empty fleet costs nothing). Never defines metrics (`vastfleet.metrics` does).
"""

from __future__ import annotations

from vf_grafana import DS, GPU, RI, Dashboard, Panel, quantiles
from vf_sweeps import SWEEPS

# Grafana marks each interruption on the time axis of the dashboards that carry this.
PREEMPTION_ANNOTATION = {
    "name": "Preemptions",
    "enable": True,
    "hide": False,
    "iconColor": "red",
    "datasource": DS,
    "expr": "sum by (gpu_model, kind) (increase(vastfleet_preemptions_total[1m])) > 0",
    "step": "60s",
    "titleFormat": "Preemption: {{kind}}",
    "textFormat": "{{gpu_model}}",
    "tagKeys": "gpu_model,kind",
    "useValueForTime": False,
}

COST = Dashboard(
    "vastfleet-cost",
    "vastfleet / Cost",
    "What the fleet spends, on what, and what it saves.",
    [
        [
            Panel(
                "Fleet $/h now",
                [(f"sum(vastfleet_fleet_spend_rate_dollars_per_hour{{{GPU}}}) or vector(0)", "$/h")],
                "stat",
                "currencyUSD",
                "The running instances' prices added up (0 when nothing runs).",
                w=6,
                h=5,
            ),
            Panel(
                "Spent (total)",
                [(f"sum(vastfleet_spend_dollars_total{{{GPU}}})", "spent")],
                "stat",
                "currencyUSD",
                "Since the scheduler started (counters reset on restart; see Budget left).",
                w=6,
                h=5,
            ),
            Panel(
                "Savings vs on-demand",
                [
                    (
                        (
                            f"sum(vastfleet_on_demand_equivalent_dollars_total{{{GPU}}})"
                            f' - sum(vastfleet_spend_dollars_total{{kind="compute",{GPU}}})'
                        ),
                        "saved",
                    )
                ],
                "stat",
                "currencyUSD",
                "The same compute at on-demand prices, minus what it cost.",
                w=6,
                h=5,
            ),
            Panel(
                "Budget left",
                [
                    (
                        (
                            "max(vastfleet_budget_total_dollars - vastfleet_budget_spent_dollars)"
                            " and on() max(vastfleet_budget_total_dollars) > 0"
                        ),
                        "left",
                    )
                ],
                "stat",
                "currencyUSD",
                "Total cap minus the budget guard's durable spend (empty: no cap).",
                w=6,
                h=5,
                thresholds=[(None, "red"), (10, "orange"), (50, "green")],
            ),
        ],
        [
            Panel(
                "Spend rate by kind",
                [(f"sum by (kind) (rate(vastfleet_spend_dollars_total{{{GPU}}}[{RI}])) * 3600", "{{kind}}")],
                unit="currencyUSD",
                stack=True,
                description="Dollars per hour actually billed: compute, storage, bandwidth.",
            ),
            Panel(
                "Spend rate vs hourly cap",
                [
                    (f"sum(rate(vastfleet_spend_dollars_total[{RI}])) * 3600", "spend $/h"),
                    ("max(vastfleet_budget_hourly_cap_dollars) > 0", "cap $/h"),
                ],
                unit="currencyUSD",
            ),
        ],
        [
            Panel(
                "Cumulative spend by GPU model and kind",
                [
                    (
                        f"sum by (gpu_model, kind) (vastfleet_spend_dollars_total{{{GPU}}})",
                        "{{gpu_model}} {{kind}}",
                    )
                ],
                unit="currencyUSD",
            ),
            Panel(
                "Spend by bid kind (dashboard range)",
                [
                    (
                        f"sum by (bid_kind) (increase(vastfleet_spend_dollars_total{{{GPU}}}[$__range]))",
                        "{{bid_kind}}",
                    )
                ],
                "bargauge",
                "currencyUSD",
            ),
        ],
        [
            Panel(
                "Cost per finished job",
                [
                    (
                        (
                            "sum by (state) (vastfleet_job_cost_dollars_sum)"
                            " / sum by (state) (vastfleet_job_cost_dollars_count)"
                        ),
                        "{{state}}",
                    )
                ],
                "stat",
                "currencyUSD",
                "Average total cost of the jobs that finished, by end state.",
                w=8,
            ),
            Panel(
                "Savings ratio",
                [
                    (
                        (
                            f'1 - sum(vastfleet_spend_dollars_total{{kind="compute",{GPU}}})'
                            f" / sum(vastfleet_on_demand_equivalent_dollars_total{{{GPU}}})"
                        ),
                        "saved",
                    )
                ],
                "stat",
                "percentunit",
                "Share of the on-demand price saved by bidding.",
                w=8,
            ),
            Panel(
                "On-demand equivalent vs paid (compute)",
                [
                    (
                        f"sum by (gpu_model) (vastfleet_on_demand_equivalent_dollars_total{{{GPU}}})",
                        "on-demand {{gpu_model}}",
                    ),
                    (
                        f'sum by (gpu_model) (vastfleet_spend_dollars_total{{kind="compute",{GPU}}})',
                        "paid {{gpu_model}}",
                    ),
                ],
                unit="currencyUSD",
                w=8,
            ),
        ],
    ],
)

PREEMPTIONS = Dashboard(
    "vastfleet-preemptions",
    "vastfleet / Preemptions and recovery",
    "How often runs are interrupted, how fast jobs come back, and the work lost.",
    [
        [
            Panel(
                "Preemptions per hour by GPU model",
                [
                    (
                        f"sum by (gpu_model) (rate(vastfleet_preemptions_total{{{GPU}}}[{RI}])) * 3600",
                        "{{gpu_model}}",
                    )
                ],
            ),
            Panel(
                "Interruptions by kind (dashboard range)",
                [(f"sum by (kind) (increase(vastfleet_preemptions_total{{{GPU}}}[$__range]))", "{{kind}}")],
                "bargauge",
                description="outbid, host_offline (host outages), stuck, heartbeat_lost, exited.",
            ),
        ],
        [
            Panel(
                "Recovery time (interruption to running again)",
                quantiles("vastfleet_recovery_seconds"),
                unit="s",
            ),
            Panel(
                "Host outages by GPU model (dashboard range)",
                [
                    (
                        (
                            "sum by (gpu_model) (increase("
                            f'vastfleet_preemptions_total{{kind="host_offline",{GPU}}}'
                            "[$__range]))"
                        ),
                        "{{gpu_model}}",
                    )
                ],
                "bargauge",
            ),
        ],
        [
            Panel(
                "Work lost (GPU-hours, dashboard range)",
                [
                    (
                        (
                            "sum by (gpu_model) ("
                            f"increase(vastfleet_work_lost_gpu_seconds_total{{{GPU}}}[$__range])) / 3600"
                        ),
                        "{{gpu_model}}",
                    )
                ],
                "bargauge",
                "h",
                "GPU time since the last checkpoint, redone after resuming.",
                w=8,
            ),
            Panel(
                "Mean recovery time",
                [("sum(vastfleet_recovery_seconds_sum) / sum(vastfleet_recovery_seconds_count)", "mean")],
                "stat",
                "s",
                w=4,
            ),
            Panel(
                "Hosts excluded",
                [("max(vastfleet_hosts_excluded)", "hosts")],
                "stat",
                "short",
                "Hosts the scheduler avoids after failures.",
                w=4,
            ),
            Panel(
                "Work lost rate",
                [
                    (
                        f"sum by (gpu_model) (rate(vastfleet_work_lost_gpu_seconds_total{{{GPU}}}[{RI}]))",
                        "{{gpu_model}}",
                    )
                ],
                unit="short",
                description="GPU-seconds lost per second.",
                w=8,
            ),
        ],
        [
            Panel(
                "Checkpoint upload throughput",
                [(f"sum(rate(vastfleet_checkpoint_upload_bytes_total[{RI}]))", "bytes/s")],
                unit="Bps",
            ),
            Panel(
                "Checkpoint upload duration",
                quantiles("vastfleet_checkpoint_upload_seconds", qs=(0.5, 0.9)),
                unit="s",
            ),
        ],
    ],
    annotations=[PREEMPTION_ANNOTATION],
)

QUEUE = Dashboard(
    "vastfleet-queue",
    "vastfleet / Queue and jobs",
    "The queue and the jobs' life cycle.",
    [
        [
            Panel(
                "Queue depth by priority band",
                [("max by (priority_band) (vastfleet_queue_depth)", "{{priority_band}}")],
                stack=True,
            ),
            Panel("Jobs by state", [("max by (state) (vastfleet_jobs)", "{{state}}")]),
        ],
        [
            Panel("Wait time (PENDING to RUNNING)", quantiles("vastfleet_job_wait_seconds"), unit="s"),
            Panel(
                "Longest wait now",
                [("max(vastfleet_queue_oldest_pending_age_seconds)", "oldest")],
                "stat",
                "s",
                w=6,
                thresholds=[(None, "green"), (3600, "orange"), (14400, "red")],
            ),
            Panel(
                "Job store reachable",
                [("min(vastfleet_jobstore_up)", "up")],
                "stat",
                "short",
                w=6,
                thresholds=[(None, "red"), (1, "green")],
            ),
        ],
        [
            Panel(
                "Throughput: jobs finished per hour",
                [(f"sum by (state) (rate(vastfleet_jobs_finished_total[{RI}])) * 3600", "{{state}}")],
                stack=True,
            ),
            Panel(
                "Jobs submitted per hour",
                [(f"sum(rate(vastfleet_jobs_submitted_total[{RI}])) * 3600", "submitted")],
            ),
        ],
    ],
    gpu_variable=False,
)

FLEET = Dashboard(
    "vastfleet-fleet",
    "vastfleet / Fleet",
    "The rented instances and the scheduler driving them.",
    [
        [
            Panel(
                "Stopped instances (must be 0)",
                [("max(vastfleet_stopped_instances)", "stopped")],
                "stat",
                "short",
                "A stopped instance bills its disk forever; vastfleet destroys, never stops.",
                w=6,
                h=5,
                thresholds=[(None, "green"), (1, "red")],
            ),
            Panel(
                "Fleet $/h",
                [(f"sum(vastfleet_fleet_spend_rate_dollars_per_hour{{{GPU}}}) or vector(0)", "$/h")],
                "stat",
                "currencyUSD",
                w=6,
                h=5,
            ),
            Panel(
                "Oldest heartbeat",
                [("max(vastfleet_heartbeat_age_max_seconds)", "age")],
                "stat",
                "s",
                "Age of the stalest last heartbeat among running jobs.",
                w=6,
                h=5,
                thresholds=[(None, "green"), (60, "orange"), (180, "red")],
            ),
            Panel(
                "Since the last scheduler pass",
                [("time() - max(vastfleet_scheduler_last_pass_timestamp_seconds)", "age")],
                "stat",
                "s",
                w=6,
                h=5,
                thresholds=[(None, "green"), (60, "orange"), (120, "red")],
            ),
        ],
        [
            Panel(
                "Instances by status",
                [(f"sum by (status) (vastfleet_instances{{{GPU}}})", "{{status}}")],
                stack=True,
            ),
            Panel(
                "Running instances by GPU model and bid kind",
                [
                    (
                        f'sum by (gpu_model, bid_kind) (vastfleet_instances{{status="running",{GPU}}})',
                        "{{gpu_model}} {{bid_kind}}",
                    )
                ],
                stack=True,
            ),
        ],
        [
            Panel(
                "$/h by GPU model and bid kind",
                [
                    (
                        (
                            "sum by (gpu_model, bid_kind) "
                            f"(vastfleet_fleet_spend_rate_dollars_per_hour{{{GPU}}})"
                        ),
                        "{{gpu_model}} {{bid_kind}}",
                    )
                ],
                unit="currencyUSD",
                stack=True,
            ),
            Panel(
                "GPUs rented",
                [(f"sum by (gpu_model) (vastfleet_fleet_gpus{{{GPU}}})", "{{gpu_model}}")],
                stack=True,
            ),
        ],
        [
            Panel("Scheduler pass duration", quantiles("vastfleet_scheduler_pass_seconds"), unit="s", w=8),
            Panel(
                "Marketplace calls by operation and code",
                [
                    (
                        f"sum by (operation, code) (rate(vastfleet_market_requests_total[{RI}]))",
                        "{{operation}} {{code}}",
                    )
                ],
                unit="reqps",
                w=8,
            ),
            Panel(
                "Marketplace error ratio",
                [
                    (
                        (
                            f'sum by (operation) (rate(vastfleet_market_requests_total{{code!~"2.."}}[{RI}]))'
                            f" / sum by (operation) (rate(vastfleet_market_requests_total[{RI}]))"
                        ),
                        "{{operation}}",
                    )
                ],
                unit="percentunit",
                w=8,
            ),
        ],
        [
            Panel(
                "Marketplace call latency (p90)",
                quantiles("vastfleet_market_request_seconds", "operation", (0.9,)),
                unit="s",
                w=24,
            )
        ],
    ],
    annotations=[PREEMPTION_ANNOTATION],
)

DASHBOARDS = {"cost": COST, "preemptions": PREEMPTIONS, "queue": QUEUE, "fleet": FLEET, "sweeps": SWEEPS}
