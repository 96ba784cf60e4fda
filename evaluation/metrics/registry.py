"""The built-in metrics, in computing order (FID first: feature diversity reuses its features), one line each.

Adding a built-in metric is its own module under `evaluation/metrics/` plus one `add(...)` line here; its
settings then sit at `evaluation.<name>.*` (the four below keep their historical addresses: `fid.*`,
`diversity.feature.*`, `clip.*`, `diversity.lpips.*`). A metric from outside the repo needs no edit: a sweep
lists it as `extra_metrics: ["package.module:Class"]` (`load_metric`).
"""
from __future__ import annotations

from typing import Any

from trainables.objects import import_object
from trainables.registry import Registry

from .base import Metric
from .function import FunctionMetric

METRICS = Registry("extra_metrics", "metric")
METRICS.add("fid", "evaluation.metrics.fid:FidMetric")                          # eval/fid, eval/kid
METRICS.add("feature_diversity", "evaluation.metrics.feature_diversity:FeatureDiversity")
METRICS.add("clip_score", "evaluation.metrics.clip_score:ClipScore")
METRICS.add("lpips_diversity", "evaluation.metrics.lpips_diversity:LpipsDiversity")
METRICS.add("preservation", "evaluation.metrics.preservation:Preservation")      # eval/preservation/*


def as_metric(obj: Any, path: str) -> Metric:
    """A Metric subclass (instantiated), a Metric instance, or a plain function plugin (wrapped)."""
    if isinstance(obj, type) and issubclass(obj, Metric):
        return obj()
    if isinstance(obj, Metric):
        return obj
    if callable(obj):
        return FunctionMetric(path, obj)
    raise TypeError(f"metric {path!r} is a {type(obj).__name__}: give a Metric subclass (evaluation.metrics.base) "
                    "or a function fn(ctx) -> {key: value}")


def builtin_metrics() -> list[Metric]:
    return [METRICS.load(name)() for name in METRICS.names()]


def load_metric(path: str) -> Metric:
    """The metric a `package.module:Name` plugin path names (raises when it does not import)."""
    return as_metric(import_object(path), path)
