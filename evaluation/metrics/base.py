"""What a metric is: the one object that declares its settings, its logged keys, its preflight and its compute.

Torch-free: `EvalConfig` validation (and so `python -m sweeps validate`) reads metric declarations without
loading any network. A metric's compute imports its math (torch, clean-fid, open_clip) inside the function.

    class MyMetric(Metric):
        name = "sharpness"                              # settings at `evaluation.sharpness.*` (a plugin)
        Settings = SharpnessSettings                    # a StrictModel subclass, validated by EvalConfig
        keys = (MetricKey("eval/sharp/mean", "sharpness", "max"), MetricKey("eval/sharp/std", "sharp. std", "min"))

        def compute(self, ctx, settings) -> dict[str, float]:
            return {"eval/sharp/mean": ..., "eval/sharp/std": ...}

A sweep enables a plugin with `extra_metrics: ["package.module:MyMetric"]` (a class or an instance) and sets
its fields under `sharpness:` in the `evaluation:` block; a bad value is a pydantic error at
`evaluation.sharpness.<field>` (the sweep loader reports file:line). Built-ins are listed in
`evaluation.metrics.registry`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Literal

from trainables.objects import import_object
from trainables.settings import StrictModel

if TYPE_CHECKING:  # type names only (the context holds torch objects)
    from evaluation.context import EvalContext


class NoSettings(StrictModel):
    """A metric without knobs."""


@dataclass(frozen=True)
class MetricKey:
    """One key a metric logs, and how the table shows it."""

    key: str                                  # MLflow metric key ("eval/fid"); with `prefix`, a family's prefix
    label: str                                # table header ("FID ↓")
    better: Literal["min", "max"] | None      # direction: lower / higher is better; None: neither
    fmt: str = ".4g"                          # format spec of a table cell
    unit: str = ""                            # unit of the value ("px"; "" = unitless)
    paper: int = 0                            # its place among the paper's columns (1 = first; 0 = not one)
    column: bool = True                       # a column of the table (False: per-model copies, spreads)
    required: bool = True                     # its presence on a run means the metric is done
    detail: bool = False                      # a per-attribute breakdown: the second table (3+ of its family)
    mark_best: bool = True                    # the table marks the best mean of a group (needs `better`)
    headline: bool = True                     # charted on a sweep's parent run
    prefix: bool = False                      # `key` is the prefix of keys named at run time (per model ...)

    @property
    def name(self) -> str:
        """The column stem in the table's DataFrame ('eval/pocket/fid_gt' -> 'pocket_fid_gt')."""
        return self.key.removeprefix("eval/").replace("/", "_")

    def matches(self, key: str) -> bool:
        return key.startswith(self.key) if self.prefix else key == self.key


class Metric:
    """Base of every metric (built-in or `package.module:Class`). Subclasses set the class attributes and
    `compute`; the rest has defaults. An instance is also callable as `metric(ctx)` (compute with default
    settings), so it can stand where a plain `module:function` plugin did."""

    name: ClassVar[str]                              # its name: units, error tags of built-ins, settings address
    Settings: ClassVar[type[StrictModel]] = NoSettings
    address: ClassVar[tuple[str, ...] | None] = None  # where its settings sit in EvalConfig; None = (name,)
    keys: ClassVar[tuple[MetricKey, ...]] = ()
    param_prefix: ClassVar[str | None] = None         # its `eval.*` params prefix; None = f"eval.{name}"

    # ---- declarations ----------------------------------------------------------------------------------
    def settings_address(self) -> tuple[str, ...]:
        return self.address if self.address is not None else (self.name,)

    def enabled(self, settings: StrictModel) -> bool:
        """Whether the config computes it (a settings field `enabled`, else on once listed)."""
        return bool(getattr(settings, "enabled", True))

    def required_keys(self, settings: StrictModel) -> list[str]:
        """The keys whose presence on a run means it is done with these settings (`missing_metrics`)."""
        return [k.key for k in self.keys if k.required and not k.prefix]

    def params(self, settings: StrictModel, cfg: Any) -> dict[str, Any]:
        """Its `eval.*` MLflow params (part of the evaluation fingerprint): every settings field by default."""
        prefix = self.param_prefix or f"eval.{self.name}"
        return {f"{prefix}.{k}": v for k, v in _flat(settings.model_dump(mode="json")).items()}

    # ---- preflight ---------------------------------------------------------------------------------------
    def check_prompts(self, prompts: list[str]) -> None:
        """Raise ValueError naming a prompt it cannot score and what it accepts; nothing by default."""

    def problems(self, settings: StrictModel, cfg: Any, prompts: list[str] | None) -> list[str]:
        """'field: what is wrong, the fix' for each thing it needs that is missing here (weights, references).
        Never loads a network; the prompts are checked apart (`check_prompts`, by evaluation.preflight)."""
        return []

    # ---- compute -----------------------------------------------------------------------------------------
    def compute(self, ctx: "EvalContext", settings: StrictModel) -> dict[str, float]:
        raise NotImplementedError(f"metric {self.name!r} defines no compute")

    def __call__(self, ctx: "EvalContext") -> dict[str, float]:
        return self.compute(ctx, self.Settings())


def error_reason(exc: BaseException) -> str:
    """One line: 'Type: message' (a KeyError's message without repr quotes, whitespace runs collapsed)."""
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], str) else str(exc)
    return " ".join(f"{type(exc).__name__}: {text}".split())


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_import_path(value: str) -> str:
    """A 'module:function' value (a settings validator: the error names the field)."""
    module, sep, attr = value.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected an import path 'module:function', got {value!r}")
    return value


def import_problem(field: str, path: str, prompts: list[str] | None, what: str) -> str | None:
    """'field: ...' when `path` does not import, or when its optional `check_prompts(prompts)` refuses one."""
    try:
        obj = import_object(path)
    except Exception as exc:  # noqa: BLE001 - any import failure is reported with the field
        return (f"{field}: {what} {path!r} cannot be imported ({error_reason(exc)}); give an importable "
                "'module:function' (the module must be on PYTHONPATH of every trial) or remove it")
    if prompts:
        try:
            check_prompts_of(obj, prompts)
        except Exception as exc:  # noqa: BLE001
            return (f"{field}: {what} {path!r} cannot score the sweep's prompts: {error_reason(exc)} "
                    "(change the prompts, or drop this metric from the evaluation)")
    return None


def check_prompts_of(obj: Any, prompts: Iterable[str]) -> None:
    """Call an object's optional `check_prompts(prompts)`; nothing when it has none."""
    check = getattr(obj, "check_prompts", None)
    if check is not None:
        check(list(prompts))
