"""A plain `module:function` plugin (`fn(ctx) -> {key: value}`) seen as a metric: no settings, no declared
keys (so it counts as done through the run's `eval.extra_metrics_done` tag, and the table labels its columns by
their last key segment). Declare a `Metric` class instead to get settings, declared keys and table columns."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from .base import Metric, NoSettings, check_prompts_of

if TYPE_CHECKING:  # type names only
    from evaluation.context import EvalContext


class FunctionMetric(Metric):
    Settings = NoSettings
    keys = ()

    def __init__(self, path: str, fn: Callable[[Any], dict[str, float]]):
        self.name = path              # instance attribute: the plugin's path is its name
        self.address = ()             # no settings block
        self.fn = fn

    def params(self, settings: NoSettings, cfg: Any) -> dict[str, Any]:
        return {}                     # `eval.extra_metrics` names it

    def check_prompts(self, prompts: list[str]) -> None:
        check_prompts_of(self.fn, prompts)

    def compute(self, ctx: "EvalContext", settings: NoSettings) -> dict[str, float]:
        return dict(self.fn(ctx) or {})
