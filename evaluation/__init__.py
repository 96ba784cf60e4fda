"""Evaluation: fixed-latent sampling, FID/KID, CLIP score, diversity, MLflow reporting, the table.

    from evaluation import EvalConfig, evaluate_run, table_dataframe
    metrics = evaluate_run(run_id_or_generator_path, prompt, EvalConfig(...), tracking_uri)

Heavy dependencies (torch, clean-fid, open_clip, mlflow) load on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

from .config import EvalConfig, load_eval_config

_LAZY = {
    "evaluate_run": "runner", "evaluate_experiment": "runner", "evaluate_generator": "runner",
    "EvalContext": "context", "table_dataframe": "table", "runs_dataframe": "table", "log_table": "table",
    "render": "table", "sample_checkpoint": "sampling", "sample_source_generator": "sampling",
    "compute_fid": "fid", "EvalMetrics": "runner", "MetricError": "runner", "missing_metrics": "runner",
    "evaluation_problems": "preflight", "check_evaluation": "preflight",
}

__all__ = ["EvalConfig", "load_eval_config", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(name)
