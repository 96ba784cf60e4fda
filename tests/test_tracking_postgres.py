"""PostgreSQL as the store of a long-lived MLflow server, for real: a cluster started by the test itself
(tracking.postgres.LocalPostgres: initdb in a temp folder, 127.0.0.1, generated password) under `mlflow server`
with several workers and proxied artifacts. Nothing is lost or duplicated when the server and the database restart
mid-run, when 64 writers hit it at once, or under the load benchmark's core at small N. (The worker-kill
exactly-once tests run against it in tests/test_exactly_once.py.)

A missing PostgreSQL FAILS with the install command (never a skip): CI installs Debian's `postgresql` package.
"""
from __future__ import annotations

import os

import pytest

from tracking import LocalMlflowServer, LocalPostgres, PostgresMissing, RunTracker, mlflow_client
from tracking import postgres as pg_mod
from tracking.loadtest import LoadConfig, run_load
from test_tracking_sender import assert_metric_resend_is_idempotent, burst_of_writers

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def test_missing_binaries_fail_with_the_install_command(monkeypatch):
    monkeypatch.delenv("PG_BIN", raising=False)
    monkeypatch.setattr(pg_mod.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(pg_mod.shutil, "which", lambda name: None)
    with pytest.raises(PostgresMissing, match="apt-get install -y postgresql"):
        LocalPostgres("/nonexistent/pg")
    monkeypatch.setenv("PG_BIN", "/nonexistent/bin")
    with pytest.raises(PostgresMissing, match="PG_BIN=/nonexistent/bin holds no initdb"):
        pg_mod.pg_bin_dir()


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    cluster = LocalPostgres(tmp_path_factory.mktemp("pg") / "cluster")
    try:
        yield cluster.start()
    finally:
        cluster.stop(remove=True)


@pytest.fixture(scope="module")
def pg_server(pg, tmp_path_factory):
    srv = LocalMlflowServer(tmp_path_factory.mktemp("pg_server"), backend_uri=pg.uri, workers=2).start(timeout=240)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.slow
def test_cluster_is_on_loopback_behind_a_generated_password(pg, pg_server):
    import psycopg

    assert pg.uri.startswith("postgresql://mlflow:") and "@127.0.0.1:" in pg.uri and len(pg.password) >= 24
    assert oct((pg.folder / "password").stat().st_mode & 0o777) == "0o600"
    with psycopg.connect(pg.uri) as con:
        listen = con.execute("SHOW listen_addresses").fetchone()[0]
        tables = {r[0] for r in con.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert listen == "127.0.0.1"
    assert {"runs", "metrics", "experiments"} <= tables, "the MLflow server did not create its schema in PostgreSQL"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg.uri.replace(pg.password, "wrong-password"), connect_timeout=10)
    # the password never appears on the MLflow server's command line (ps shows it to every user)
    assert pg.password not in " ".join(pg_server.command())


@pytest.mark.slow
def test_resending_a_metric_batch_adds_no_point_postgres(pg_server):
    assert_metric_resend_is_idempotent(pg_server.url)


@pytest.mark.slow
def test_64_simultaneous_writers_never_wedge_the_postgres_server(pg_server):
    """Before the pool fix, 64 writers x 5 calls: 281 of 320 within the client's timeout on 4 workers."""
    done, errors = burst_of_writers(pg_server.url, writers=64, calls=3)
    assert done == 64 * 3 and errors == [], errors[:5]


@pytest.mark.slow
def test_server_and_database_restart_mid_run_lose_and_duplicate_nothing(pg, tmp_path):
    server = LocalMlflowServer(tmp_path / "store", backend_uri=pg.uri, workers=2).start(timeout=240)
    try:
        tracker = RunTracker(server.url, "pg-restart", spool_dir=tmp_path / "spool", run_name="t",
                             flush_interval=0.2, max_backoff=1.0).start(wait=30)
        tracker.log_params({"seed": 3})
        for step in range(1, 61):
            if step == 20:
                assert tracker.flush(60), tracker.last_error
                server.stop()                  # the tracking server goes away mid-run ...
                pg.stop()                      # ... and so does its database
            if step == 45:
                pg.start()
                server.start(timeout=240)      # same port, same database
            tracker.log_metrics({"loss": 1.0 / step, "train/step": float(step)}, step=step)
            if step == 30:
                grid = tmp_path / "grid_30.png"
                grid.write_bytes(b"\x89PNG stand-in")
                tracker.log_artifact(grid, "samples")
        assert tracker.close("FINISHED", timeout=120), tracker.last_error
        client = mlflow_client(server.url)
        for key in ("loss", "train/step"):
            assert sorted(m.step for m in client.get_metric_history(tracker.run_id, key)) == list(range(1, 61)), key
        run = client.get_run(tracker.run_id)
        assert run.info.status == "FINISHED" and run.data.params == {"seed": "3"}
        assert run.info.artifact_uri.startswith("mlflow-artifacts:"), "artifacts must be proxied by the server"
        assert [a.path for a in client.list_artifacts(tracker.run_id, "samples")] == ["samples/grid_30.png"]
        assert len(client.search_runs([run.info.experiment_id])) == 1
    finally:
        server.stop()
        if not pg.running():
            pg.start()


@pytest.mark.slow
def test_load_core_at_8_trials_loses_and_duplicates_nothing_on_postgres():
    row = run_load(LoadConfig(store="postgres", workers=2, trials=8, procs=2, mode="burst", duration=10,
                              burst_every=5, burst_steps=50, grid_every=25, eval_every=50, drain_timeout=300))
    assert row["processes_reported"] == 2 and row["all_closed"], row
    assert row["logged"] == 8 * 100 * 4 + 8 * 2 * 8 and row["delivered"] == row["logged"], row
    assert row["lost"] == 0 and row["duplicates"] == 0 and row["rejected"] == 0, row
    assert row["grids_delivered"] == row["grids_logged"] == 8 * 4 and row["runs_unfinished"] == 0, row
    assert row["extra_runs"] == 0, row
