"""MLflow's Flask app with a lean `log-batch` route, served by the project's gunicorn servers (issue 19).

MLflow's handler turns a JSON body into a protobuf message (google.protobuf's pure-Python `ParseDict`), checks it
against a schema and turns the message back into entities: about a third of the server's CPU for a spool's batch of
80 points (cProfile, benchmarks in docs/benchmarks.md). The lean route reads a body of metrics alone straight into
the same `mlflow.entities.Metric`s that `Metric.from_proto` makes and hands them to the same store call, which
validates every metric as before. Any other body (params or tags, another field, a missing field, a number that is
not one, a string where MLflow's JSON has a number) and the artifacts-only mode go to MLflow's own handler, so
every answer to them, errors included, is MLflow's. tests/test_tracking_lean_app.py sends the same bodies to both.

Loaded by `mlflow server --app-name sgf-lean` (the `mlflow.app` entry point in pyproject.toml), which
tracking.server adds for gunicorn; uvicorn serves MLflow's FastAPI app, which this Flask app is not.
"""
from __future__ import annotations

import math
import os
import sys

from flask import Response, request
from mlflow.entities import Metric
from mlflow.server import ARTIFACTS_ONLY_ENV_VAR, app
from mlflow.server import handlers

LOG_BATCH_ENDPOINT = "_log_batch"          # the endpoint name MLflow registers both log-batch paths under
_BODY_FIELDS = {"run_id", "metrics", "params", "tags"}
_METRIC_FIELDS = {"key", "value", "timestamp", "step"}
_SPECIAL_DOUBLES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}   # proto3 JSON's doubles
_INT64 = (-2 ** 63, 2 ** 63 - 1)


def _int64(value) -> int | None:
    if type(value) is int and _INT64[0] <= value <= _INT64[1]:
        return value
    return None


def _double(value) -> float | None:
    if type(value) is float:
        return value
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:
            return None
    return _SPECIAL_DOUBLES.get(value) if type(value) is str else None


def metrics_only(body) -> tuple[str, list[Metric]] | None:
    """(run_id, metrics) of a log-batch body that carries metrics alone, in MLflow's JSON; None for anything else."""
    if type(body) is not dict or not body.keys() <= _BODY_FIELDS or body.get("params", []) != [] \
            or body.get("tags", []) != []:
        return None
    run_id, points = body.get("run_id"), body.get("metrics")
    if type(run_id) is not str or not run_id or type(points) is not list or not points:
        return None
    metrics = []
    for point in points:
        if type(point) is not dict or not point.keys() <= _METRIC_FIELDS:
            return None
        key, value = point.get("key"), _double(point.get("value"))
        timestamp, step = _int64(point.get("timestamp")), _int64(point.get("step", 0))
        if type(key) is not str or not key or value is None or timestamp is None or step is None:
            return None
        metrics.append(Metric(key, value, timestamp, step))
    return run_id, metrics


def lean_log_batch(mlflow_handler):
    """The log-batch view: metrics alone go straight to the store, everything else to `mlflow_handler`."""

    @handlers.catch_mlflow_exception
    def log_batch():
        parsed = None if os.environ.get(ARTIFACTS_ONLY_ENV_VAR) else metrics_only(request.get_json(silent=True))
        if parsed is None:
            return log_batch.mlflow_handler()
        run_id, metrics = parsed
        handlers._get_tracking_store().log_batch(run_id=run_id, metrics=metrics, params=[], tags=[])
        return Response("{}", mimetype="application/json")       # MLflow's empty LogBatch.Response

    log_batch.mlflow_handler = mlflow_handler
    log_batch.sgf_lean = True
    return log_batch


def install(flask_app) -> None:
    """Swap the lean view in for MLflow's on both log-batch paths (the before-request checks stay)."""
    mlflow_handler = flask_app.view_functions[LOG_BATCH_ENDPOINT]
    if not getattr(mlflow_handler, "sgf_lean", False):
        flask_app.view_functions[LOG_BATCH_ENDPOINT] = lean_log_batch(mlflow_handler)
        print("tracking.lean_app: lean log-batch route", file=sys.stderr, flush=True)   # in the server's log


install(app)
