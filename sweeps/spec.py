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

from trainables.config_io import get_dotted, set_dotted

from .errors import MissingModelError, SweepError
from .expand import EVAL_PATH_FIELDS, REF_FIELDS, Sweep, Trial, build_config, expand_env, load_sweep
from .preflight import check_models, evaluation_problems, sweep_prompts
from .schema import (AshaSearch, Distribution, GridSearch, OptunaSearch, Resources, SweepSpec, config_field,
                     format_spec_error)
from .yaml_marks import Marks, load_yaml_with_marks

__all__ = ["AshaSearch", "Distribution", "EVAL_PATH_FIELDS", "GridSearch", "Marks", "MissingModelError",
           "OptunaSearch", "REF_FIELDS", "Resources", "Sweep", "SweepError", "SweepSpec", "Trial", "build_config",
           "check_models", "config_field", "evaluation_problems", "expand_env",
           "format_spec_error", "get_dotted", "load_sweep", "load_yaml_with_marks", "set_dotted", "sweep_prompts"]
