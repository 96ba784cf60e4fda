"""The sweep file schema (pydantic, `extra="forbid"`) and its errors as `file:line: field: problem (fix)`.

    name, description, base, grid, zip, resources, max_concurrent_trials, retries, storage_path, tracking_uri,
    checkpoint_every, search (grid | asha | optuna), evaluation (evaluation.config.EvalConfig), entrypoint,
    log_generator_max_mb

Also the dotted-path introspection of pydantic models (`config_field`): which `grid:` axes name a field.
"""
from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Literal, Union

from pydantic import BaseModel, Field, ValidationError, model_validator

from evaluation.config import EvalConfig
from trainables.components import ComponentHost, settings_key
from trainables.config import AdaptConfig
from trainables.cost.gpus import GPUS
from trainables.settings import StrictModel as _Strict

from .yaml_marks import Marks, dotted


class Resources(_Strict):
    cpu: float = Field(1.0, gt=0)      # CPUs per trial (fractional allowed)
    # GPUs per trial (fractional allowed: 0.5 = two trials per GPU); 'auto' = the share of one `gpu_type` the
    # trial's traced peak memory needs (sweeps/cost.py: as many trials per GPU as fit, with a margin)
    gpu: float | Literal["auto"] = Field(0.0)
    gpu_type: str = "H100"             # the GPU the sweep is planned for: 'auto' packing, cost estimates
    custom: dict[str, float] = Field(default_factory=dict)  # Ray custom resources per trial, e.g. {pool_a: 1}

    @model_validator(mode="after")
    def _gpu(self) -> "Resources":
        if self.gpu != "auto" and self.gpu < 0:
            raise ValueError(f"gpu must be >= 0 or 'auto', got {self.gpu}")
        if self.gpu_type.upper() not in GPUS:
            raise ValueError(f"gpu_type {self.gpu_type!r} is not one of {', '.join(GPUS)} (trainables/cost/gpus.py)")
        return self


EVAL_PREFIX = "eval/"     # metrics the evaluation stage reports once per trial (sweeps/trial.py)


class GridSearch(_Strict):
    type: Literal["grid"] = "grid"


class AshaSearch(_Strict):
    type: Literal["asha"]
    metric: str                                # a step metric reported by the loop, e.g. loss/sds_mse
    mode: Literal["min", "max"] = "min"
    grace_period: int = Field(100, ge=1)       # in loop steps
    reduction_factor: float = Field(4.0, gt=1)
    max_t: int | None = Field(None, ge=1)      # default: the largest train.iterations of the sweep


class Distribution(_Strict):
    dist: Literal["uniform", "loguniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None            # for choice

    @model_validator(mode="after")
    def _check(self) -> "Distribution":
        if self.dist == "choice":
            if not self.values:
                raise ValueError("choice needs a non-empty 'values' list")
        elif self.low is None or self.high is None or self.low >= self.high:
            raise ValueError(f"{self.dist} needs low < high")
        return self


class Objective(_Strict):
    metric: str                         # an eval/ metric of the sweep's evaluation (reported once per trial)
    mode: Literal["min", "max"]


class Bound(_Strict):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _some(self) -> "Bound":
        if self.min is None and self.max is None:
            raise ValueError("a bound needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} > max {self.max}")
        return self


class PickRule(_Strict):
    """Which trial of a search is THE answer (sweeps/pareto.py), tagged `sweep.picked` and named on the parent run.

    constrained: the best `objective` among the trials within every `subject_to` bound (none within: the trial
                 that violates the bounds least, reported as such);
    knee:        the Pareto-front trial closest to the ideal point, each objective min-max normalised over the
                 front (the front's "knee")."""

    rule: Literal["constrained", "knee"]
    objective: str | None = None                         # constrained: the metric optimised, one of the objectives
    subject_to: dict[str, Bound] = Field(default_factory=dict)   # eval/ metric -> bound (inclusive)

    @model_validator(mode="after")
    def _check(self) -> "PickRule":
        if self.rule == "constrained" and (self.objective is None or not self.subject_to):
            raise ValueError("rule 'constrained' needs `objective` (the metric to optimise) and `subject_to` "
                             "(metric: {min: ..} / {max: ..})")
        if self.rule == "knee" and (self.objective is not None or self.subject_to):
            raise ValueError("rule 'knee' takes no objective / subject_to (it reads the search's objectives)")
        return self


class OptunaSearch(_Strict):
    """Optuna over `params`: one metric (`metric` + `mode`) or two or more `objectives` at once (a Pareto front;
    `sampler` tpe or nsga2), with an optional `pick` rule naming the answer."""

    type: Literal["optuna"]
    num_samples: int = Field(..., ge=1)
    metric: str | None = None  # a step metric (its last value counts) or an eval/ metric of the sweep's evaluation
    mode: Literal["min", "max"] = "min"
    objectives: list[Objective] | None = Field(None, min_length=2)   # multi-objective: eval/ metrics
    sampler: Literal["tpe", "nsga2"] = "tpe"            # Optuna's TPESampler / NSGAIISampler (seeded)
    pick: PickRule | None = None
    params: dict[str, Distribution] = Field(..., min_length=1)   # dotted AdaptConfig path -> distribution
    seed: int = 0

    @model_validator(mode="after")
    def _one_goal(self) -> "OptunaSearch":
        if (self.metric is None) == (self.objectives is None):
            raise ValueError("give either `metric` (+ `mode`) or `objectives` (two or more {metric, mode})")
        names = [o.metric for o in self.objectives or []]
        if len(set(names)) != len(names):
            raise ValueError(f"objectives name a metric twice: {names}")
        if self.pick is not None:
            goals = names or [self.metric]
            if self.pick.rule == "knee" and len(goals) < 2:
                raise ValueError("pick rule 'knee' needs two or more objectives")
            if self.pick.objective is not None and self.pick.objective not in goals:
                raise ValueError(f"pick.objective {self.pick.objective!r} is not one of the search's objectives {goals}")
        return self

    def goals(self) -> list[tuple[str, str]]:
        """(metric, mode) of every objective (one for a single-metric search)."""
        if self.objectives:
            return [(o.metric, o.mode) for o in self.objectives]
        return [(str(self.metric), self.mode)]

    def metrics(self) -> list[str]:
        """Every metric the search reads: its objectives and the pick's bounds."""
        out = [m for m, _ in self.goals()]
        if self.pick is not None:
            out += [m for m in self.pick.subject_to if m not in out]
        return out


class SweepSpec(_Strict):
    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    base: Union[str, dict[str, Any]]
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    zip: list[dict[str, list[Any]]] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    max_concurrent_trials: int | None = Field(None, ge=1)
    # run later trials in the worker process of a finished one (Tune's reuse_actors): no process start-up and no
    # re-import of torch/diffusers/open_clip per trial (the bulk of a short trial's overhead)
    reuse_workers: bool = True
    retries: int = Field(0, ge=0)
    storage_path: str = "runs/sweeps"
    tracking_uri: str | None = None
    checkpoint_every: int | None = Field(None, ge=0)
    search: Union[GridSearch, AshaSearch, OptunaSearch] = Field(default_factory=GridSearch, discriminator="type")
    evaluation: EvalConfig | None = None        # validated with the sweep (same file:line errors); None = no stage
    entrypoint: str = "trainables.adaptation.loop:adapt"   # module:function with adapt's signature
    log_generator_max_mb: float = Field(256.0, ge=0)  # log the adapted generator as an artifact below this size


# ----------------------------------------------------------------------------------------------- dotted paths
def _unwrap(annotation: Any) -> list[Any]:
    """The members of a Union / `X | Y` annotation (the annotation itself otherwise)."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) for a in _unwrap(arg)]
    return [annotation]


def _submodel(annotation: Any) -> type[BaseModel] | None:
    return next((a for a in _unwrap(annotation) if isinstance(a, type) and issubclass(a, BaseModel)), None)


def config_field(path: str, model: type[BaseModel] = AdaptConfig,
                 data: dict[str, Any] | None = None) -> tuple[bool, list[str]]:
    """(exists, suggestions) for a dotted path into `model`. `data` (the base config mapping) says which
    component of one's own ('package.module:Class') a section selects, whose settings are fields there too."""
    parts = path.split(".")
    current: type[BaseModel] | None = model
    node: Any = data or {}
    for i, part in enumerate(parts):
        plugin = _plugin_settings(current, node, part)
        node = node.get(part, {}) if isinstance(node, dict) else {}
        if plugin is not None:
            current = plugin
            continue
        if current is None or part not in current.model_fields:
            names = list(current.model_fields) if current is not None else []
            prefix = ".".join(parts[:i])
            close = difflib.get_close_matches(part, names, n=3, cutoff=0.5)
            full = [f"{prefix}.{c}" if prefix else c for c in (close or names)]
            return False, full
        current = _submodel(current.model_fields[part].annotation)
    return True, []


def _plugin_settings(model: type[BaseModel] | None, node: Any, part: str) -> type[BaseModel] | None:
    """The settings class at key `part` of a component of one's own that `node` (a config section) selects."""
    if model is None or not issubclass(model, ComponentHost) or part in model.model_fields or not isinstance(node, dict):
        return None
    name = node.get(model.component_field, model.model_fields[model.component_field].default)
    if not isinstance(name, str) or model.component_registry.is_builtin(name):
        return None
    try:
        decl = model.component_registry.declaration(name)
    except Exception:  # noqa: BLE001 - an unknown component is reported by the config's own validation
        return None
    return decl.Settings if settings_key(decl) == part else None


def _spec_fields_at(path: tuple) -> list[str]:
    """The field names allowed at a key path of the sweep file (for 'did you mean')."""
    model: Any = SweepSpec
    for part in path:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return list(fields)
        model = _submodel(fields[part].annotation)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def format_spec_error(exc: ValidationError, marks: Marks) -> str:
    """One `file:line: ...` line per problem of the sweep file (unknown field with 'did you mean', missing
    field, bad value with what was given)."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        # drop pydantic's discriminator tags from the path ("search", "asha", "metric")
        if loc[:1] == ("search",) and loc[1:2] and loc[1] in ("grid", "asha", "optuna"):
            loc = loc[:1] + loc[2:]
        where = " (see evaluation/config.py EvalConfig)" if loc[:1] == ("evaluation",) else ""
        if err["type"] == "extra_forbidden":
            names = _spec_fields_at(loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), names, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(names)}"
            lines.append(f"{marks.where(loc)}: unknown field '{dotted(loc)}' ({hint}){where}")
        elif err["type"] == "missing":
            lines.append(f"{marks.file}: required field '{dotted(loc)}' is missing: add it{where}")
        else:
            lines.append(f"{marks.where(loc)}: field '{dotted(loc)}': {err['msg']} (got {err.get('input')!r}){where}")
    return "\n".join(lines)
