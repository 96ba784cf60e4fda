"""How this project lays out MLflow: size limits, tag names, experiments, parent and child runs.

    experiment   = sweep name, tagged as model training (`EXPERIMENT_KIND_TAG`), so the MLflow UI opens it in
                   the model-training view (runs, charts) and not the GenAI one (traces, judges, prompts)
    parent run   = one sweep launch (tag sweep.role=parent): the sweep file, trials.csv, the table and the sweep
                   report; no per-trial metrics (bounded at any number of trials)
    child run    = one trial (tags mlflow.parentRunId, sweep.role=trial, sweep.trial_id, sweep.label = its run name,
                   mlflow.runColor); the experiment's saved view groups the trials by sweep.label, which shows
                   every trial in the chart view without expanding the parent (`tracking.views`)
    params       = dotted config keys, values cut to MAX_PARAM_LEN (the full text goes to tag param_full.<key>)
"""
from __future__ import annotations

import json
import re
from typing import Any

# MLflow's limits (mlflow.utils.validation): longer values are refused with INVALID_PARAMETER_VALUE
MAX_PARAM_LEN = 500
MAX_TAG_LEN = 5000
METRICS_PER_BATCH = 1000     # log_batch
PARAMS_PER_BATCH = 100

PARENT_RUN_TAG = "mlflow.parentRunId"      # MLflow's own: nests a run under its parent in the UI
ROLE_TAG = "sweep.role"
# a search's answer (sweeps/pareto.py): on the parent run the picked trial's name, run id and the rule; on the trial
PICK_TAG, PICK_RUN_TAG, PICK_RULE_TAG, PICKED_TAG = "sweep.pick", "sweep.pick_run_id", "sweep.pick_rule", "sweep.picked"
ROLE_PARENT, ROLE_TRIAL = "parent", "trial"
TRIAL_ID_TAG = "sweep.trial_id"
# The MLflow UI (3.x) chooses an experiment's view from this tag: without it, a new experiment may open in the
# GenAI view. Values from the UI's ExperimentKind enum (mlflow/server/js: CUSTOM_MODEL_DEVELOPMENT).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"


def clip_tag(value: Any) -> str:
    return str(value)[:MAX_TAG_LEN]


def clip_tags(tags: dict[str, Any] | None) -> dict[str, str]:
    return {k: clip_tag(v) for k, v in (tags or {}).items()}


def clip_param(value: Any) -> str:
    return str(value)[:MAX_PARAM_LEN]


def truncate_params(params: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(params as strings, truncated to MAX_PARAM_LEN; full values of the truncated ones)."""
    out, full = {}, {}
    for key, value in params.items():
        text = "None" if value is None else (json.dumps(value) if isinstance(value, (list, dict)) else str(value))
        if len(text) > MAX_PARAM_LEN:
            full[key] = text
            text = text[: MAX_PARAM_LEN - 3] + "..."
        out[key] = text
    return out, full


def slug(text: str, max_len: int = 40) -> str:
    """'A red circle!' -> 'a-red-circle': lowercase words joined by '-', cut at a word end within max_len."""
    words = re.findall(r"[a-z0-9]+(?:\.[0-9]+)?", str(text).lower())
    out = ""
    for w in words:
        nxt = f"{out}-{w}" if out else w
        if len(nxt) > max_len:
            break
        out = nxt
    return out or (words[0][:max_len] if words else "x")


def ensure_experiment(client: Any, name: str, artifact_location: str | None = None) -> str:
    """The experiment's id: created (or restored) when needed, and tagged as model training."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        exp_id = exp.experiment_id
    else:
        try:
            exp_id = client.create_experiment(name, artifact_location=artifact_location)
        except Exception:
            exp = client.get_experiment_by_name(name)  # created concurrently by another trial
            if exp is None:
                raise
            exp_id = exp.experiment_id
    if exp is None or exp.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING_KIND:
        client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    return exp_id
