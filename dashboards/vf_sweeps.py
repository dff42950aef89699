"""The Sweeps dashboard: spend and projection against budget, trials by state, target against actual
instances, the limit that binds, and the best value against dollars spent, per sweep (`$sweep`).

The sweep gauges are read from Redis at scrape time by every API replica alike: panels take `max` per sweep
before adding sweeps up. Never defines metrics (`vastfleet.sweeps.metrics` does).
"""

from __future__ import annotations

from vf_grafana import Dashboard, Panel, Variable

SWEEP = 'sweep=~"$sweep"'


def per_sweep(metric: str, extra: str = "") -> str:
    """The metric per sweep, one series per sweep however many replicas report it."""
    labels = f"{SWEEP},{extra}" if extra else SWEEP
    return f"max by (sweep) ({metric}{{{labels}}})"


COST_PER_TRIAL = (
    f"sum by (outcome) (max by (sweep, outcome) (vastfleet_sweep_trial_cost_dollars_sum{{{SWEEP}}}))"
    f" / sum by (outcome) (max by (sweep, outcome) (vastfleet_sweep_trial_cost_dollars_count{{{SWEEP}}}))"
)

SWEEPS = Dashboard(
    "vastfleet-sweeps",
    "vastfleet / Sweeps",
    "Autoscaled hyperparameter sweeps: trials, instances, dollars against budget, the best value found.",
    [
        [
            Panel("Spent", [(f"sum({per_sweep('vastfleet_sweep_spent_dollars')})", "spent")], "stat", "currencyUSD",
                  "What the sweeps' instances billed (the driver's accrual, durable across restarts).", w=6, h=5),
            Panel("Projected", [(f"sum({per_sweep('vastfleet_sweep_projected_dollars')})", "projected")], "stat",
                  "currencyUSD", "Spent, plus the running trials' expected rest and the stop reserve.", w=6, h=5),
            Panel("Budget left", [(
                f"sum({per_sweep('vastfleet_sweep_budget_dollars')} - {per_sweep('vastfleet_sweep_spent_dollars')})",
                "left")], "stat", "currencyUSD", "Budget minus spent (sweeps without a budget count 0).", w=6, h=5,
                thresholds=[(None, "red"), (0.000001, "orange"), (1, "green")]),
            Panel("Best value", [(per_sweep("vastfleet_sweep_best_value"), "{{sweep}}")], "stat", "short",
                  "The best final metric among COMPLETE trials, per sweep.", w=6, h=5),
        ],
        [
            Panel("Spend and projection against budget", [
                (per_sweep("vastfleet_sweep_spent_dollars"), "spent {{sweep}}"),
                (per_sweep("vastfleet_sweep_projected_dollars"), "projected {{sweep}}"),
                (f"{per_sweep('vastfleet_sweep_budget_dollars')} > 0", "budget {{sweep}}"),
            ], unit="currencyUSD", description="No new trial starts once the projection would pass the budget."),
            Panel("Trials by state", [(
                f"sum by (state) (max by (sweep, state) (vastfleet_sweep_trials{{{SWEEP}}}))", "{{state}}")],
                stack=True, description="QUEUED, RUNNING, COMPLETE, PRUNED, FAILED."),
        ],
        [
            Panel("Target against actual instances", [
                (per_sweep("vastfleet_sweep_target_instances"), "target {{sweep}}"),
                (per_sweep("vastfleet_sweep_instances"), "actual {{sweep}}"),
            ], description="The autoscaler's target and the sweeps' instances holding GPUs."),
            Panel("Binding limit", [(
                f"max by (sweep, limit) (vastfleet_sweep_binding_limit{{{SWEEP}}}) == 1", "{{sweep}}: {{limit}}")],
                description="Which limit sets the target: budget, parallel, market, runnable or deadline."),
        ],
        [
            Panel("Best value against dollars spent", [
                (per_sweep("vastfleet_sweep_best_value"), "best {{sweep}}"),
                (per_sweep("vastfleet_sweep_spent_dollars"), "spent $ {{sweep}}"),
            ], description="How the best value improved as money was spent (spent on the right axis).",
                right_axis=["spent $ {{sweep}}"], w=16),
            Panel("Cost per trial by outcome", [(COST_PER_TRIAL, "{{outcome}}")], "bargauge", "currencyUSD",
                  "Average cost of the finished trials: complete, pruned, failed.", w=8),
        ],
    ],
    gpu_variable=False,
    variables=[Variable("sweep", "Sweep", "label_values(vastfleet_sweep_info, sweep)")],
)
