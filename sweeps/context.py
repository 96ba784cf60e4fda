"""What a sweep hands every trial (`TrialContext`), and the name a trial's MLflow run gets (`run_name`).

The launcher builds one `TrialContext` per sweep launch and passes it through `tune.with_parameters`; Ray
pickles it into the object store (on `--resume` the launcher builds it again and Tune's restored trials get
the new one). It is frozen: a trial reads attributes, never mutates or `.get`s with a default of its own.
Every field, its type and its default live here and nowhere else.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from evaluation.config import EvalConfig
from trainables.config import AdaptConfig, flatten
from tracking import TrackingTarget, slug

# axes the run name always shows (method, prompt) or ends with (seed); an axis zipped with one of them is
# determined by it (e.g. the method's learning rate) and is left out of the name
NAMED_ALWAYS = ("method", "prompt", "seed")


class TrialContext(BaseModel):
    """Everything a trial shares with its sweep (not a hyperparameter: never in Tune's tables)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    experiment: str                                   # MLflow experiment = sweep name
    base: dict[str, Any]                              # the base AdaptConfig mapping (refs absolutized when embedded)
    tracking: TrackingTarget                          # where the trial's run goes (a served store: the driver's
                                                      # server's URL; a URI string is taken as a target)
    trials_dir: str                                   # <storage>/<sweep>/trials: one folder per trial
    parent_run_id: str | None = None                  # the sweep's parent run (mlflow.parentRunId of each trial)
    checkpoint_every: int | None = None               # sweep override of train.checkpoint_every
    entrypoint: str = "trainables.adaptation.loop:adapt"         # module:function with adapt's signature
    evaluation: EvalConfig | None = None              # the sweep's `evaluation:` (None: no evaluation stage)
    log_generator_max_mb: float = Field(256.0, ge=0)  # log the adapted generator as an artifact below this size
    git_commit: str = "unknown"                       # tag git_commit of every trial run
    cwd: str | None = None                            # embedded: the driver's cwd (relative refs resolve there)
    final_flush_timeout_s: float = Field(300.0, gt=0) # wait this long for the trial's spool at the end
    name_axes: tuple[str, ...] = ()                   # varying axes shown in run names (`run_name`)
    model_cache_entries: int = Field(4, ge=0)         # frozen models a reused worker keeps (model_cache; 0 = off)

    @field_validator("tracking", mode="before")
    @classmethod
    def _target(cls, value: Any) -> Any:
        return TrackingTarget(value) if isinstance(value, str) else value


def name_axes(axes: list[list[str]], varying: list[str]) -> tuple[str, ...]:
    """The varying axes a run name shows: not method/prompt/seed, nor one zipped with them."""
    out = []
    for group in axes:
        if any(p in NAMED_ALWAYS for p in group):
            continue
        out.extend(p for p in group if p in varying)
    return tuple(out)


def search_name_axes(search: Any) -> tuple[str, ...]:
    """An Optuna search's sampled params (not method/prompt/seed): what tells its trials apart in run names."""
    params = getattr(search, "params", None) or {}
    return tuple(p for p in params if p not in NAMED_ALWAYS)


def _axis_label(path: str) -> str:
    """'optim.lr' -> 'lr'; 'reg.lpips.weight' -> 'lpips.weight' (a bare 'weight'/'k'/'enabled' says nothing)."""
    parts = path.split(".")
    generic = {"weight", "k", "enabled", "value", "scale", "name", "mode"}
    return ".".join(parts[-2:]) if len(parts) > 1 and parts[-1] in generic else parts[-1]


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (int,)):
        return str(value)
    return slug(str(value), 16)


def run_name(cfg: AdaptConfig, axes: tuple[str, ...] = ()) -> str:
    """A trial run's name from its config: method, prompt slug, the named varying axes, seed.
    e.g. 'fusion-a-red-circle-s0', 'fusion-a-red-circle-lpips.weight0.5-s1'."""
    flat = flatten(cfg)
    parts = [cfg.method, slug(cfg.prompt, 32)]
    parts += [f"{_axis_label(a)}{_value_text(flat.get(a))}" for a in axes if a in flat]
    parts.append(f"s{cfg.seed}")
    return "-".join(parts)
