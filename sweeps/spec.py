"""Sweep files: schema, expansion into trials, and errors that name the file, the line and the fix.

A sweep file is YAML:

    name: ffhq-long-prompt                 # MLflow experiment and Tune experiment name
    base: ../configs/ffhq.yaml             # AdaptConfig: a path (relative to this file) or an inline mapping
    grid:                                  # cartesian product; keys are dotted paths into AdaptConfig
      reg.directional.weight: [0.0, 1.0]
      seed: [42, 43]
    zip:                                   # each group varies together (equal lengths); groups multiply the grid
      - method: [fusion, nada]
        optim.lr: [0.0008, 0.0016]
    resources: {cpu: 4, gpu: 1}            # per trial; fractional allowed
    max_concurrent_trials: 4
    retries: 2                             # Tune FailureConfig(max_failures): resume from the last checkpoint
    storage_path: ${SWEEPS_STORAGE:-runs/sweeps}
    tracking_uri: null                     # null = local SQLite store in ./mlruns served on loopback
    checkpoint_every: 100                  # overrides train.checkpoint_every in every trial
    search: {type: grid}                   # grid | asha | optuna
    evaluation: {...}                      # passed to evaluation.EvalConfig

`${VAR}` and `${VAR:-default}` are expanded in paths (base, model references, storage_path, tracking_uri).

The jobs live in their own modules; this one re-exports their public names:
    sweeps/errors.py      SweepError, MissingModelError
    sweeps/yaml_marks.py  YAML with line marks (Marks, load_yaml_with_marks)
    sweeps/schema.py      SweepSpec and its parts, format_spec_error, config_field (dotted paths into a model)
    sweeps/expand.py      load_sweep, Sweep, Trial, build_config, expand_env, REF_FIELDS
    sweeps/preflight.py   check_models, evaluation_problems, sweep_prompts
"""
from __future__ import annotations

from pathlib import Path

import yaml

from trainables.config import flatten
from trainables.config_io import get_dotted, set_dotted

from .errors import MissingModelError, SweepError
from .expand import EVAL_PATH_FIELDS, REF_FIELDS, Sweep, Trial, build_config, expand_env, load_sweep
from .preflight import check_models, evaluation_problems, sweep_prompts
from .schema import (AshaSearch, Distribution, GridSearch, OptunaSearch, Resources, SweepSpec, config_field,
                     format_spec_error)
from .yaml_marks import Marks, load_yaml_with_marks

__all__ = ["AshaSearch", "Distribution", "EVAL_PATH_FIELDS", "GridSearch", "Marks", "MissingModelError",
           "OptunaSearch", "REF_FIELDS", "Resources", "Sweep", "SweepError", "SweepSpec", "Trial", "build_config",
           "check_models", "config_field", "estimate_gpu_hours", "evaluation_problems", "expand_env",
           "format_spec_error", "get_dotted", "load_sweep", "load_yaml_with_marks", "set_dotted", "sweep_prompts"]


# ----------------------------------------------------------------------------------------------- figures
def estimate_gpu_hours(sweep: Sweep, figures_path: Path | None = None) -> tuple[float | None, str]:
    """GPU-hours from benchmarks/figures.yaml rows {method, it_per_s, gpu, [match: {dotted: value}]}."""
    figures_path = figures_path or Path(__file__).resolve().parent.parent / "benchmarks" / "figures.yaml"
    if not figures_path.is_file():
        return None, f"unknown (no benchmark figures table at {figures_path})"
    rows = yaml.safe_load(figures_path.read_text()) or []
    if isinstance(rows, dict):
        rows = rows.get("figures", [])
    total = 0.0
    for trial in sweep.trials:
        flat = flatten(trial.config)
        row = next(
            (r for r in rows if r.get("method") in (None, trial.config.method)
             and all(str(flat.get(k)) == str(v) for k, v in (r.get("match") or {}).items())),
            None,
        )
        if row is None or not row.get("it_per_s"):
            return None, f"unknown (no figure in {figures_path} matches trial {trial.index + 1})"
        gpus = max(sweep.spec.resources.gpu, 0.0) or 1.0
        total += trial.config.train.iterations / float(row["it_per_s"]) / 3600.0 * gpus
    return total, f"{total:.2f} GPU-hours (from {figures_path.name})"
