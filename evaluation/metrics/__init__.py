"""Evaluation metrics as self-describing objects (torch-free declarations; compute imports its math late).

    from evaluation.metrics import Metric, MetricKey, METRICS, builtin_metrics, load_metric

`base.py` (the `Metric` base and `MetricKey`), one module per built-in metric (`fid.py`, `feature_diversity.py`,
`clip_score.py`, `lpips_diversity.py`), `function.py` (a plain `module:function` plugin as a metric) and
`registry.py` (the built-ins, `load_metric` for `package.module:Class` plugins).
"""
from __future__ import annotations

from .base import Metric, MetricKey, NoSettings
from .registry import METRICS, builtin_metrics, load_metric

__all__ = ["Metric", "MetricKey", "NoSettings", "METRICS", "builtin_metrics", "load_metric"]
