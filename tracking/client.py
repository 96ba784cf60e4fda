"""The only place an `MlflowClient` is constructed: always with an explicit tracking URI (never the fluent
API's global `mlflow.set_tracking_uri`), after `configure_env`."""
from __future__ import annotations

from typing import Protocol, Union

from .env import configure_env


class HasTrackingUri(Protocol):
    """Anything with the URI a client uses now: a `tracking.target.TrackingTarget`."""

    @property
    def uri(self) -> str: ...


Target = Union[str, HasTrackingUri, None]


def tracking_uri_of(target: Target) -> str | None:
    """The URI string of a URI, a `TrackingTarget` (its `uri` now) or None (MLflow's own default)."""
    return target if target is None or isinstance(target, str) else target.uri


def mlflow_client(tracking_uri: Target):
    """An `MlflowClient` for `tracking_uri`: a URI, a `TrackingTarget` (its `uri`), or None (MLflow's own
    default, $MLFLOW_TRACKING_URI)."""
    configure_env()
    from mlflow.tracking import MlflowClient   # heavy (about 1 s): loaded on first use

    return MlflowClient(tracking_uri=tracking_uri_of(tracking_uri))
