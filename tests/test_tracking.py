"""tracking (the spool, the server): nothing is lost when the MLflow server goes away, or when processes share SQLite."""
from __future__ import annotations

import multiprocessing as mp
import os
import time

import pytest

from tracking import (LocalMlflowServer, RunTracker, start_parent_run, truncate_params)

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def test_truncate_params_keeps_full_value_aside():
    clean, full = truncate_params({"prompt": "x" * 2000, "a.b": 1.5, "c": None, "d": [1, 2]})
    assert len(clean["prompt"]) == 500 and clean["prompt"].endswith("...")
    assert full == {"prompt": "x" * 2000}
    assert clean["a.b"] == "1.5" and clean["c"] == "None" and clean["d"] == "[1, 2]"


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


@pytest.mark.slow
def test_server_stopped_mid_run_loses_nothing(tmp_path):
    """A REAL `mlflow server` is stopped while a run logs, then restarted on the same port and store."""
    server = LocalMlflowServer(tmp_path / "store").start()
    uri = server.url
    try:
        parent = start_parent_run(uri, "exp", run_name="sweep", tags={"sweep.role": "parent"}, spec_text="name: x\n")
        tracker = RunTracker(uri, "exp", spool_dir=tmp_path / "spool", parent_run_id=parent, run_name="trial_000",
                             tags={"sweep.role": "trial"}, flush_interval=0.2, max_backoff=1.0).start()
        tracker.log_params({"prompt": "p" * 900, "seed": 1})
        steps = 60
        slowest = 0.0
        for step in range(1, steps + 1):
            if step == 20:
                assert tracker.flush(30), tracker.last_error
                server.stop()                       # the server goes away mid-run
            if step == 45:
                server.start()                      # ... and comes back (same port, same store)
            tic = time.perf_counter()
            tracker.log_metrics({"loss/x": 1.0 / step, "perf/it_per_s": 10.0}, step=step)
            slowest = max(slowest, time.perf_counter() - tic)
            if 20 <= step < 45:
                grid = tmp_path / f"grid_{step}.png"
                grid.write_bytes(b"\x89PNG fake")
                if step == 30:
                    tracker.log_artifact(grid, "samples")
            time.sleep(0.05)
        assert slowest < 0.5, "logging must never wait for the server"
        assert tracker.close("FINISHED", timeout=60), tracker.last_error
        history = _client(uri).get_metric_history(tracker.run_id, "loss/x")
        assert sorted(m.step for m in history) == list(range(1, steps + 1))
        run = _client(uri).get_run(tracker.run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.data.params["prompt"].endswith("...") and run.data.tags["param_full.prompt"] == "p" * 900
        assert [a.path for a in _client(uri).list_artifacts(tracker.run_id, "samples")] == ["samples/grid_30.png"]
        assert tracker.pending_bytes() == 0
    finally:
        server.stop()


def _worker(uri: str, spool: str, index: int, steps: int, barrier) -> None:
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    tracker = RunTracker(uri, "concurrent", spool_dir=spool, run_name=f"trial_{index}", flush_interval=0.05,
                         max_backoff=0.5)
    barrier.wait()
    tracker.start(wait=60)
    tracker.log_params({f"p{i}": i for i in range(30)})
    for step in range(1, steps + 1):
        tracker.log_metrics({f"m{k}": step * k for k in range(5)}, step=step)
        if step % 10 == 0:
            tracker.flush(0)   # many small transactions from every process at once
            time.sleep(0.01)
    assert tracker.close("FINISHED", timeout=120), tracker.last_error


@pytest.mark.slow
def test_concurrent_writers_on_one_sqlite_file_lose_nothing(tmp_path):
    """Four processes write one SQLite store directly (no server): 'database is locked' is retried."""
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (tmp_path / "mlruns").mkdir()
    start_parent_run(uri, "concurrent", run_name="sweep", tags={"sweep.role": "parent"})  # creates the schema
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    steps = 80
    procs = [ctx.Process(target=_worker, args=(uri, str(tmp_path / f"spool{i}"), i, steps, barrier)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    client = _client(uri)
    exp = client.get_experiment_by_name("concurrent")
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.info.run_name.startswith("trial_")]
    assert len(runs) == 4
    for run in runs:
        assert len(run.data.params) == 30 and run.info.status == "FINISHED"
        for k in range(5):
            hist = client.get_metric_history(run.info.run_id, f"m{k}")
            assert sorted(m.step for m in hist) == list(range(1, steps + 1))
