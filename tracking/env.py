"""MLflow's process environment: set once, here, before any MLflow client exists (`configure_env`).

Rule: the project has ONE retry policy, `tracking.errors.retry` / the spool's backoff. MLflow's own HTTP
retries would stack under it and block a caller (the spool's flusher) for minutes, so they are always off
(`MLFLOW_HTTP_REQUEST_MAX_RETRIES=0`, forced). The other settings are defaults a user may override in the
environment (a faster verdict on a dead server: `MLFLOW_HTTP_REQUEST_TIMEOUT=10`).
"""
from __future__ import annotations

import os

FORCED = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}          # our retry policy is the only one
DEFAULTS = {
    # seconds per request; a timeout is TRANSIENT. 60, not 10: a busy server (64 trials on SQLite) still executes
    # a request the client gave up on, and the retry doubles its work (issue 19); see tracking.sender
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",       # no progress bars in trial logs
}


def configure_env() -> None:
    """Apply FORCED (always) and DEFAULTS (where unset). Idempotent; called by `tracking.client.mlflow_client`."""
    os.environ.update(FORCED)
    for key, value in DEFAULTS.items():
        if not os.environ.get(key):
            os.environ[key] = value
