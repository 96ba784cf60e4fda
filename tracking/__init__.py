"""MLflow for the whole project, in one place; trainables, evaluation and sweeps import it, it imports none
of them.

    client.py       mlflow_client(uri | target): the only MlflowClient constructor (after env.configure_env)
    target.py       TrackingTarget: a URI or a local store served on loopback; the URI precedence, the server's
                    start/stop, the client (passed instead of a URI string)
    env.py          MLflow's environment, set once (MLflow's own HTTP retries off: errors.py is the policy)
    errors.py       classify_error (TRANSIENT / PERMANENT / UNKNOWN) and retry: the one retry policy
    conventions.py  size limits, tag names, experiment kind, ensure_experiment, truncate_params, slug
    store.py        the local default store (./mlruns/mlflow.db)
    spool.py        RunTracker: a trial's run written through an on-disk spool; replay
    sender.py       the process-wide sending policy of the spools (bounded in flight, congestion pause, batching)
    postgres.py     LocalPostgres: a throwaway PostgreSQL cluster in a folder, on loopback (tests, platform/local/up)
    loadtest.py     the tracking load benchmark's core (benchmarks/tracking_load.py, tests at small N)
    runs.py         the sweep's parent run, its saved view (publish_sweep_view), experiment_runs (parents / trials)
    views.py        the saved view 'results at a glance' of a sweep's chart view (measured on MLflow 3.17's UI)
    browser.py      headless Chromium over the DevTools protocol (the UI and report checks, README screenshots)
    server.py       LocalMlflowServer: the lean loopback server (SQLite, one worker; or any store, N workers)
    fast_store.py   the servers' metric writes in bulk (MLflow's SQL store, same rows; an mlflow.tracking_store entry point)
    __main__.py     python -m tracking replay | ui | postgres

MLflow itself loads on first use (about 1 s), not on import.
"""
from __future__ import annotations

from .client import mlflow_client, tracking_uri_of
from .conventions import (EXPERIMENT_KIND_TAG, MAX_PARAM_LEN, MAX_TAG_LEN, MODEL_TRAINING_KIND, PARENT_RUN_TAG,
                          PICK_RULE_TAG, PICK_RUN_TAG, PICK_TAG, PICKED_TAG, ROLE_PARENT, ROLE_TAG, ROLE_TRIAL, TRIAL_ID_TAG, clip_param, clip_tag, clip_tags,
                          ensure_experiment, slug, truncate_params)
from .env import configure_env
from .errors import PERMANENT, TRANSIENT, UNKNOWN, classify_error, is_retryable, retry
from .postgres import LocalPostgres, PostgresMissing
from .runs import experiment_runs, finish_run, git_commit, publish_sweep_view, start_parent_run
from .sender import SendGate, SenderSettings, gate_for
from .views import LABEL_TAG, RUN_COLOR_TAG, run_color, view_url
from .server import LocalMlflowServer, serve_local, wait_healthy
from .spool import BACKLOG_TAG, OFFSET_FILE, REJECTED_FILE, RUN_FILE, SPOOL_FILE, SPOOL_ID_TAG, RunTracker, replay
from .store import default_tracking_dir, default_tracking_uri, is_sqlite, sqlite_artifact_location
from .target import TrackingTarget, is_loopback_host, is_loopback_uri

__all__ = [
    "mlflow_client", "tracking_uri_of", "TrackingTarget", "is_loopback_host", "is_loopback_uri", "configure_env", "classify_error", "is_retryable", "retry", "TRANSIENT", "PERMANENT", "UNKNOWN",
    "EXPERIMENT_KIND_TAG", "MODEL_TRAINING_KIND", "MAX_PARAM_LEN", "MAX_TAG_LEN", "PARENT_RUN_TAG", "ROLE_TAG",
    "PICK_TAG", "PICK_RUN_TAG", "PICK_RULE_TAG", "PICKED_TAG",
    "ROLE_PARENT", "ROLE_TRIAL", "TRIAL_ID_TAG", "clip_param", "clip_tag", "clip_tags", "ensure_experiment", "slug",
    "truncate_params", "experiment_runs", "finish_run", "git_commit", "start_parent_run", "publish_sweep_view",
    "LABEL_TAG", "RUN_COLOR_TAG", "run_color", "view_url", "LocalMlflowServer", "serve_local", "wait_healthy",
    "RunTracker", "replay", "SPOOL_FILE", "SPOOL_ID_TAG", "BACKLOG_TAG", "SendGate", "SenderSettings", "gate_for",
    "LocalPostgres", "PostgresMissing",
    "OFFSET_FILE", "RUN_FILE", "REJECTED_FILE", "default_tracking_dir", "default_tracking_uri", "is_sqlite",
    "sqlite_artifact_location",
]
