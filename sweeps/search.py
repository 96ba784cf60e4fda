"""Ray Tune search algorithms as sweeps build them: Optuna on a metric that only the final result carries.

An `eval/...` metric (CLIP score, FID, a pocket plugin's prompt accuracy) is reported once, with the trial's last
result, after its evaluation (sweeps/trial.py); every step's report before it lacks the key. Ray's OptunaSearch
reads `result[metric]` on every intermediate result (for pruning), and Tune's driver refuses a result without the
search metric (strict metric checking). `final_metric_optuna` keeps Optuna's sampler and its completion logic (it
tells the study the value in the trial's final result) and skips intermediate results that lack the metric.
"""
from __future__ import annotations

import os

from ray.tune.search.optuna import OptunaSearch

STRICT_CHECK_ENV = "TUNE_DISABLE_STRICT_METRIC_CHECKING"


class FinalMetricOptuna(OptunaSearch):
    """OptunaSearch whose metric arrives with the final result only (no pruning on intermediate steps)."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self.metric in result:
            super().on_trial_result(trial_id, result)


def _sampler(kind: str, seed: int):
    import optuna  # late: only a search that names a sampler needs it here (Ray imports it for OptunaSearch)

    return optuna.samplers.NSGAIISampler(seed=seed) if kind == "nsga2" else optuna.samplers.TPESampler(seed=seed)


def optuna_search(metrics: list[str], modes: list[str], seed: int, final_only: bool,
                  sampler: str = "tpe") -> OptunaSearch:
    """The Optuna searcher of a sweep: one metric, or two or more (multi-objective: Optuna keeps the Pareto front;
    Ray's searcher reads only the final result for them). `final_only` for metrics reported once per trial
    (eval/...): sets Tune's strict-metric switch off in this (the driver's) process, the per-step results cannot
    carry them."""
    if final_only:
        os.environ[STRICT_CHECK_ENV] = "1"
    if len(metrics) > 1:
        return OptunaSearch(metric=list(metrics), mode=list(modes), sampler=_sampler(sampler, seed))
    cls = FinalMetricOptuna if final_only else OptunaSearch
    if sampler == "tpe":
        return cls(metric=metrics[0], mode=modes[0], seed=seed)
    return cls(metric=metrics[0], mode=modes[0], sampler=_sampler(sampler, seed))
