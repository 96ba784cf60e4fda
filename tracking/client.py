"""The only place an `MlflowClient` is constructed: always with an explicit tracking URI (never the fluent
API's global `mlflow.set_tracking_uri`), after `configure_env`."""
from __future__ import annotations

from .env import configure_env


def mlflow_client(tracking_uri: str | None):
    """An `MlflowClient` for `tracking_uri` (None: MLflow's own default, $MLFLOW_TRACKING_URI)."""
    configure_env()
    from mlflow.tracking import MlflowClient   # heavy (about 1 s): loaded on first use

    return MlflowClient(tracking_uri=tracking_uri)
