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


def optuna_search(metric: str, mode: str, seed: int, final_only: bool) -> OptunaSearch:
    """The Optuna searcher of a sweep; `final_only` for metrics reported once per trial (eval/...). Sets Tune's
    strict-metric switch off in this (the driver's) process for them: the per-step results cannot carry it."""
    if not final_only:
        return OptunaSearch(metric=metric, mode=mode, seed=seed)
    os.environ[STRICT_CHECK_ENV] = "1"
    return FinalMetricOptuna(metric=metric, mode=mode, seed=seed)
