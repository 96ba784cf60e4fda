"""The bulk metric writes of the project's servers (tracking/fast_store.py) store exactly what MLflow's own
SqlAlchemyStore stores: the same calls go to both stores, one database each, and the `metrics` and
`latest_metrics` tables are compared row for row; on SQLite and on a real PostgreSQL (started by the test, as in
test_tracking_postgres.py). The cases are the ones MLflow's own code handles specially: duplicates inside a batch,
a batch re-sent whole or in part (primary-key collisions), NaN and infinities, older steps after newer ones,
ties, more than 500 keys in one batch (its chunked IN lists), one-metric calls and a deleted run. Then a real
`mlflow server` started by tracking.server serves the bulk store (its entry point is loaded in the server's
worker) and, with SGF_FAST_METRICS=0, MLflow's own.
"""
from __future__ import annotations

import math
import os

import pytest
import sqlalchemy

from tracking import LocalMlflowServer, LocalPostgres, mlflow_client
from tracking.fast_store import FAST_METRICS_ENV, build_store

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
T0 = 1_700_000_000_000


def _m(key, value, step, ts=None):
    from mlflow.entities import Metric
    return Metric(key, value, T0 + step if ts is None else ts, step)


def _calls():
    """(method, args) in order; the run is filled in by _apply."""
    batch1 = [_m("loss", 1.0 - 0.01 * s, s) for s in range(40)] + [_m("acc", 0.5, s) for s in range(40)]
    return [
        ("log_batch", batch1),
        ("log_batch", batch1),                                            # re-sent whole
        ("log_batch", batch1[30:] + [_m("loss", 0.2, 40), _m("loss", 0.2, 40)]),   # part re-sent, a duplicate
        ("log_batch", [_m("loss", 9.0, 3, ts=T0 + 99)]),                   # an older step later: not the latest
        ("log_batch", [_m("nan", math.nan, 1), _m("nan", 0.0, 1), _m("inf", math.inf, 2), _m("inf", -math.inf, 3)]),
        ("log_batch", [_m("tie", 1.0, 5, ts=T0), _m("tie", 1.0, 5, ts=T0 + 1), _m("tie", 2.0, 5, ts=T0 + 1),
                       _m("tie", 0.5, 5, ts=T0 + 1)]),
        ("log_batch", [_m(f"k{i:04d}", float(i), 0) for i in range(700)]),   # > 500 keys: chunked
        ("log_batch", [_m(f"k{i:04d}", float(i) + 1, 1) for i in range(0, 700, 3)]),
        ("log_metric", _m("single", 3.0, 7)),
        ("log_metric", _m("single", 3.0, 7)),                              # a single re-sent point
        ("log_batch", [_m("acc", 0.9, 100)] + [_m("acc", 0.8, 100, ts=T0 + 1)]),
    ]


def _apply(store, experiment: str):
    from mlflow.exceptions import MlflowException

    eid = store.create_experiment(experiment)
    run_id = store.create_run(eid, "tester", 0, [], "r").info.run_id
    for method, arg in _calls():
        if method == "log_batch":
            store.log_batch(run_id, arg, [], [])
        else:
            store.log_metric(run_id, arg)
    store.delete_run(run_id)
    with pytest.raises(MlflowException) as deleted:          # a deleted run refuses further points, same error
        store.log_batch(run_id, [_m("late", 1.0, 0)], [], [])
    return run_id, str(deleted.value)


def _tables(uri: str, run_id: str):
    engine = sqlalchemy.create_engine(uri)
    try:
        with engine.connect() as con:
            cols = "key, value, timestamp, step, is_nan"
            metrics = sorted(map(tuple, con.execute(sqlalchemy.text(
                f"SELECT {cols} FROM metrics WHERE run_uuid = :r"), {"r": run_id})))
            latest = sorted(map(tuple, con.execute(sqlalchemy.text(
                f"SELECT {cols} FROM latest_metrics WHERE run_uuid = :r"), {"r": run_id})))
    finally:
        engine.dispose()
    return metrics, latest


def _compare(uri_mlflow: str, uri_bulk: str, monkeypatch, tmp_path):
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    monkeypatch.setenv(FAST_METRICS_ENV, "1")
    bulk = build_store(uri_bulk, str(tmp_path / "a1"))
    assert type(bulk).__name__.startswith("BulkMetrics") and isinstance(bulk, SqlAlchemyStore)
    monkeypatch.setenv(FAST_METRICS_ENV, "0")
    plain = build_store(uri_mlflow, str(tmp_path / "a2"))
    assert type(plain) is SqlAlchemyStore                     # switched off: MLflow's own store, untouched
    fallbacks = []                                            # calls the bulk store handed to MLflow's method
    mlflows = SqlAlchemyStore._log_metrics_once
    monkeypatch.setattr(SqlAlchemyStore, "_log_metrics_once",
                        lambda self, *a: (fallbacks.append(self is bulk), mlflows(self, *a))[1])
    run_plain, err_plain = _apply(plain, "e")
    run_bulk, err_bulk = _apply(bulk, "e")
    assert sum(fallbacks) == 3        # only the three re-sent calls collide; every other one went in bulk
    assert err_bulk.replace(run_bulk, "RUN") == err_plain.replace(run_plain, "RUN")
    m_plain, l_plain = _tables(uri_mlflow, run_plain)
    m_bulk, l_bulk = _tables(uri_bulk, run_bulk)
    # an independent count: the distinct points of all calls, as MLflow's primary key defines them
    distinct = set()
    for method, arg in _calls():
        for m in (arg if method == "log_batch" else [arg]):
            nan = math.isnan(m.value)
            value = 0.0 if nan else max(min(m.value, 1.7976931348623157e308), -1.7976931348623157e308)
            distinct.add((m.key, value, m.timestamp, m.step, nan))
    assert len(m_plain) == len(distinct)
    assert m_bulk == m_plain
    assert l_bulk == l_plain
    latest = {row[0]: row for row in l_bulk}
    assert latest["loss"][3] == 40 and latest["tie"][1] == 2.0 and latest["acc"][1:4] == (0.9, T0 + 100, 100)
    assert latest["nan"][4] in (True, 1) and latest["k0003"][1] == 4.0 and latest["k0004"][1] == 4.0


def test_bulk_writes_equal_mlflows_on_sqlite(tmp_path, monkeypatch):
    _compare(f"sqlite:///{tmp_path / 'plain.db'}", f"sqlite:///{tmp_path / 'bulk.db'}", monkeypatch, tmp_path)


@pytest.mark.slow
def test_bulk_writes_equal_mlflows_on_postgresql(tmp_path, monkeypatch):
    import psycopg

    cluster = LocalPostgres(tmp_path / "pg").start()
    try:
        with psycopg.connect(cluster.uri, autocommit=True) as con:
            con.execute("CREATE DATABASE bulk OWNER mlflow")
        bulk_uri = cluster.uri.rsplit("/", 1)[0] + "/bulk"
        _compare(cluster.uri, bulk_uri, monkeypatch, tmp_path)
    finally:
        cluster.stop(remove=True)


@pytest.mark.slow
@pytest.mark.parametrize("fast", ["1", "0"])
def test_the_local_server_serves_the_store_its_environment_names(tmp_path, monkeypatch, fast):
    monkeypatch.setenv(FAST_METRICS_ENV, fast)
    srv = LocalMlflowServer(tmp_path / "srv").start(timeout=240)
    try:
        client = mlflow_client(srv.url)
        eid = client.create_experiment("e")
        run = client.create_run(eid)
        client.log_batch(run.info.run_id, metrics=[_m("loss", 1.0 / (s + 1), s) for s in range(50)])
        client.log_batch(run.info.run_id, metrics=[_m("loss", 1.0 / (s + 1), s) for s in range(25, 60)])
        history = client.get_metric_history(run.info.run_id, "loss")
        assert sorted(m.step for m in history) == list(range(60))
        assert client.get_run(run.info.run_id).data.metrics["loss"] == pytest.approx(1 / 60)
    finally:
        srv.stop()
    log = srv.log_path.read_text(errors="replace")
    assert ("bulk metric writes" in log) == (fast == "1"), log[-2000:]


def test_an_unknown_http_server_is_refused_with_the_choices(tmp_path):
    with pytest.raises(ValueError, match="uvicorn, gunicorn"):
        LocalMlflowServer(tmp_path, http="hypercorn")


@pytest.mark.slow
def test_the_gunicorn_server_takes_the_spools_writes_whole(tmp_path):
    """The write-heavy setup of docs/benchmarks.md (gunicorn in front of the Flask app, bulk metric writes) at 8
    trials: every point, grid and run arrives once, and the UI's page is served."""
    from tracking.loadtest import LoadConfig, run_load

    row = run_load(LoadConfig(store="sqlite", http="gunicorn", trials=8, procs=2, mode="burst", duration=10,
                              burst_every=5, burst_steps=50, grid_every=25, eval_every=50, drain_timeout=300,
                              store_dir=str(tmp_path / "store")))
    assert row["processes_reported"] == 2 and row["all_closed"], row
    assert row["logged"] == 8 * 100 * 4 + 8 * 2 * 8 and row["delivered"] == row["logged"], row
    assert row["lost"] == 0 and row["duplicates"] == 0 and row["rejected"] == 0, row
    assert row["grids_delivered"] == row["grids_logged"] == 8 * 4 and row["runs_unfinished"] == 0, row
    import urllib.request

    srv = LocalMlflowServer(tmp_path / "ui", http="gunicorn").start(timeout=240)
    try:
        with urllib.request.urlopen(srv.url + "/", timeout=30) as resp:
            assert resp.status == 200 and b"<html" in resp.read(2000).lower()
    finally:
        srv.stop()
    log = srv.log_path.read_text(errors="replace")
    assert "gunicorn" in log.lower() and "lean log-batch route" in log      # tracking/lean_app.py's app is served
