"""The lean log-batch route of the project's gunicorn servers (tracking/lean_app.py) answers and stores exactly what
MLflow's own handler does: the same bodies go through MLflow's Flask app once with MLflow's view and once with the
lean one, each to its own run of the same bulk store (tracking/fast_store.py), and the answers (status, JSON, with
the run ids put aside) and the runs' `metrics` and `latest_metrics` rows are compared. The bodies are a spool's
batches and everything around them that MLflow's JSON allows or refuses: defaults, proto3's special doubles,
numbers as strings, missing or extra fields, params and tags, limits, a run that does not exist or was deleted.
Each body is labelled by hand with the path it must take, and the MLflow view's calls are counted.
"""
from __future__ import annotations

import json
import os

import pytest
import sqlalchemy

from tracking.fast_store import FAST_METRICS_ENV, build_store

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
T0 = 1_700_000_000_000
RUN = "<RUN>"                  # replaced by each side's run id


def _points(n, step0=0, **extra):
    return [{"key": f"train/m{i % 4}", "value": 0.25 * i + step0, "timestamp": T0 + step0 + i // 4,
             "step": step0 + i // 4, **extra} for i in range(n)]


# (name, body, lean): lean says whether the lean route must take the body itself (True) or hand it to MLflow's
CASES = [
    ("spool batch", {"run_id": RUN, "metrics": _points(80)}, True),
    ("re-sent whole", {"run_id": RUN, "metrics": _points(80)}, True),
    ("part re-sent", {"run_id": RUN, "metrics": _points(40, step0=15)}, True),      # steps 15-19 stored
    ("empty params and tags", {"run_id": RUN, "metrics": _points(8, 50), "params": [], "tags": []}, True),
    ("ints, special doubles", {"run_id": RUN, "metrics": [
        {"key": "i", "value": 3, "timestamp": T0, "step": 1}, {"key": "n", "value": "NaN", "timestamp": T0, "step": 1},
        {"key": "p", "value": "Infinity", "timestamp": T0, "step": 1},
        {"key": "q", "value": "-Infinity", "timestamp": T0, "step": 1}]}, True),
    ("step left out, zero timestamp", {"run_id": RUN, "metrics": [{"key": "d", "value": 1.5, "timestamp": 0}]}, True),
    ("zero value, negative step", {"run_id": RUN, "metrics": [{"key": "z", "value": 0.0, "timestamp": T0, "step": -3}]},
     True),
    ("a name MLflow refuses", {"run_id": RUN, "metrics": [{"key": "../up", "value": 1.0, "timestamp": T0, "step": 0}]},
     True),
    ("1,001 points", {"run_id": RUN, "metrics": [{"key": f"k{i}", "value": 1.0, "timestamp": T0, "step": 0}
                                                 for i in range(1001)]}, True),
    ("numbers as strings", {"run_id": RUN, "metrics": [{"key": "s", "value": "2.5", "timestamp": str(T0),
                                                        "step": "4"}]}, False),
    ("a float timestamp", {"run_id": RUN, "metrics": [{"key": "f", "value": 1.0, "timestamp": float(T0), "step": 0}]},
     False),
    ("a bool value", {"run_id": RUN, "metrics": [{"key": "b", "value": True, "timestamp": T0, "step": 0}]}, False),
    ("step past int64", {"run_id": RUN, "metrics": [{"key": "o", "value": 1.0, "timestamp": T0, "step": 2 ** 63}]},
     False),
    ("no timestamp", {"run_id": RUN, "metrics": [{"key": "t", "value": 1.0, "step": 0}]}, False),
    ("empty key", {"run_id": RUN, "metrics": [{"key": "", "value": 1.0, "timestamp": T0, "step": 0}]}, False),
    ("a model id", {"run_id": RUN, "metrics": _points(4, 60, model_id="m-1")}, False),
    ("params", {"run_id": RUN, "metrics": _points(4, 70), "params": [{"key": "lr", "value": "0.002"}]}, False),
    ("tags", {"run_id": RUN, "tags": [{"key": "phase", "value": "train"}]}, False),
    ("no metrics", {"run_id": RUN, "metrics": []}, False),
    ("run_uuid instead", {"run_uuid": RUN, "metrics": _points(4, 80)}, False),
    ("no run id", {"metrics": _points(4, 90)}, False),
    ("a list", [1, 2], False),                                 # MLflow answers 500 (AttributeError)
    ("a huge value", {"run_id": RUN, "metrics": [{"key": "h", "value": 10 ** 400, "timestamp": T0, "step": 0}]},
     False),                                                   # MLflow answers 500 (OverflowError)
    ("a run that does not exist", {"run_id": "0" * 32, "metrics": _points(4, 95)}, True),
]


def _fill(body, run_id):
    return json.loads(json.dumps(body).replace(RUN, run_id))


def _rows(uri: str, run_id: str):
    engine = sqlalchemy.create_engine(uri)
    try:
        with engine.connect() as con:
            cols = "key, value, timestamp, step, is_nan"
            return [sorted(map(tuple, con.execute(sqlalchemy.text(f"SELECT {cols} FROM {table} WHERE run_uuid = :r"),
                                                  {"r": run_id}))) for table in ("metrics", "latest_metrics")]
    finally:
        engine.dispose()


def test_the_lean_route_answers_and_stores_as_mlflows_handler(tmp_path, monkeypatch):
    from mlflow.server import app, handlers

    import tracking.lean_app as lean_app

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    monkeypatch.setenv(FAST_METRICS_ENV, "1")
    store = build_store(uri, str(tmp_path / "artifacts"))
    monkeypatch.setattr(handlers, "_tracking_store", store)
    lean_view = app.view_functions[lean_app.LOG_BATCH_ENDPOINT]
    assert lean_view.sgf_lean                                  # importing the module installed it
    lean_app.install(app)                                      # installing again keeps one lean view over MLflow's
    assert app.view_functions[lean_app.LOG_BATCH_ENDPOINT] is lean_view
    mlflow_view, handed = lean_view.mlflow_handler, []
    monkeypatch.setattr(lean_view, "mlflow_handler", lambda: (handed.append(1), mlflow_view())[1])
    eid = store.create_experiment("lean")
    runs = {side: store.create_run(eid, "tester", 0, [], side).info.run_id for side in ("mlflow", "lean")}
    client = app.test_client()
    monkeypatch.setitem(app.config, "PROPAGATE_EXCEPTIONS", False)     # a crash is a 500 answer, as in a server

    def post(side, body, path="/api/2.0/mlflow/runs/log-batch"):
        view = mlflow_view if side == "mlflow" else lean_view
        monkeypatch.setitem(app.view_functions, lean_app.LOG_BATCH_ENDPOINT, view)
        handed.clear()
        resp = client.post(path, data=json.dumps(_fill(body, runs[side])), content_type="application/json")
        text = resp.data.decode().replace(runs[side], RUN)
        return resp.status_code, json.loads(text) if resp.is_json else text, len(handed)

    statuses = []
    for name, body, lean in CASES:
        want = post("mlflow", body)
        got = post("lean", body)
        assert got[:2] == want[:2], name
        assert got[2] == (0 if lean else 1), name              # the path it took
        statuses.append(want[0])
    assert statuses.count(200) >= 10 and statuses.count(400) >= 5 and {404, 500} <= set(statuses)   # all were tried
    assert _rows(uri, runs["lean"]) == _rows(uri, runs["mlflow"])
    metrics, latest = _rows(uri, runs["lean"])
    stored = {(key, value, ts, step, bool(nan)) for key, value, ts, step, nan in metrics}
    expected = set()                                           # the lean bodies' points, as MLflow stores them
    for (name, body, lean), status in zip(CASES, statuses):
        if lean and status == 200:
            for p in body["metrics"]:
                value = float(p["value"]) if p["value"] not in ("NaN", "Infinity", "-Infinity") else \
                    {"NaN": 0.0, "Infinity": 1.7976931348623157e308, "-Infinity": -1.7976931348623157e308}[p["value"]]
                expected.add((p["key"], value, p["timestamp"], p.get("step", 0), p["value"] == "NaN"))
    assert len(expected) == 80 + 20 + 8 + 4 + 1 + 1 and expected <= stored    # every point once, re-sends too
    assert len(metrics) == len(stored)
    assert {row[0]: row[4] for row in latest}["n"] in (True, 1)
    # the same on the other path MLflow registers, and a deleted run is refused alike
    body = {"run_id": RUN, "metrics": _points(4, 200)}
    assert post("lean", body, "/ajax-api/2.0/mlflow/runs/log-batch")[:2] == (200, {})
    for run_id in runs.values():
        store.delete_run(run_id)
    assert post("lean", body)[:2] == post("mlflow", body)[:2] != (200, {})


@pytest.mark.parametrize("body", [
    None, "text", {"run_id": "r", "metrics": [{"key": "k", "value": None, "timestamp": T0}]},
])
def test_bodies_the_lean_route_cannot_read_go_to_mlflow(body):
    from tracking.lean_app import metrics_only

    assert metrics_only(body) is None
