"""The spools' process-wide sending policy (tracking.sender) and the exactly-once rules it relies on.

The fast tests check the gate itself (bounded concurrency, growing jittered pauses, settings from the
environment). The slow ones use a REAL `mlflow server` on 127.0.0.1: re-sending a metric batch the server already
executed adds no point (the premise of every retry), a run whose create_run answer was lost is found again instead
of created twice, and a backlog is reported (WARNING, run tag) and then cleared.
"""
from __future__ import annotations

import logging
import os
import threading

import pytest

from tracking import (BACKLOG_TAG, SPOOL_ID_TAG, RunTracker, SendGate, SenderSettings,
                      mlflow_client)
from tracking.sender import is_congestion, jittered

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


# ------------------------------------------------------------------------------------------------ the gate
def test_settings_come_from_the_environment_and_bad_values_name_the_variable():
    s = SenderSettings.from_env({"TRACKING_MAX_IN_FLIGHT": "2", "TRACKING_JITTER": "0", "OTHER": "x"})
    assert s.max_in_flight == 2 and s.jitter == 0 and s.backoff_max_s == SenderSettings().backoff_max_s
    with pytest.raises(ValueError, match="TRACKING_MAX_IN_FLIGHT='0'") as err:
        SenderSettings.from_env({"TRACKING_MAX_IN_FLIGHT": "0"})
    assert "fix or unset" in str(err.value)


def test_gate_never_lets_more_than_max_in_flight_requests_through():
    gate = SendGate(SenderSettings(max_in_flight=2))
    inside, release = threading.Semaphore(0), threading.Event()
    done = []

    def request(i):
        with gate.slot():
            inside.release()
            release.wait(30)
        done.append(i)

    threads = [threading.Thread(target=request, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    assert inside.acquire(timeout=30) and inside.acquire(timeout=30)
    assert not inside.acquire(timeout=0.5), "a third request entered a gate of two"
    assert gate.in_flight == 2
    release.set()
    for t in threads:
        t.join(30)
    assert sorted(done) == list(range(8)) and gate.max_seen_in_flight == 2 and gate.in_flight == 0


def test_congestion_pauses_grow_with_jitter_and_reset_after_a_success():
    s = SenderSettings(backoff_first_s=1.0, backoff_max_s=4.0, jitter=0.5)
    gate = SendGate(s)
    pauses = [gate.congested() for _ in range(5)]
    for got, base in zip(pauses, [1.0, 2.0, 4.0, 4.0, 4.0]):
        assert base <= got <= base * 1.5, (pauses)
    assert gate.pause_left() > 0 and gate.congestion_signals == 5
    gate.succeeded()
    assert 1.0 <= gate.congested() <= 1.5, "a success must reset the pause to its first step"
    assert jittered(2.0, 0.0) == 2.0


def test_a_slow_server_stretches_the_drain_interval_within_its_cap():
    gate = SendGate(SenderSettings(latency_factor=2.0, max_flush_interval_s=10.0))
    assert gate.next_wait(2.0, 0.1) == 2.0         # fast answers: the configured interval
    assert gate.next_wait(2.0, 3.0) == 6.0         # 3 s answers: wait 6 s (larger batches)
    assert gate.next_wait(2.0, 60.0) == 10.0       # never longer than the cap


def test_congestion_is_told_apart_from_a_refusal():
    import requests
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE

    assert is_congestion(requests.ReadTimeout("Read timed out."))
    assert is_congestion(MlflowException("busy", error_code=TEMPORARILY_UNAVAILABLE))
    assert is_congestion(MlflowException("QueuePool limit of size 1 overflow 1 reached, connection timed out",
                                         error_code=INVALID_PARAMETER_VALUE))
    assert not is_congestion(MlflowException("changed param", error_code=INVALID_PARAMETER_VALUE))
    assert not is_congestion(requests.ConnectionError("Connection refused"))


# ------------------------------------------------------------------------------------------------ real server
def _client(uri):
    return mlflow_client(uri)


def assert_metric_resend_is_idempotent(uri: str) -> None:
    """The premise of every re-send: MLflow's store ignores a metric point it already holds."""
    from mlflow.entities import Metric

    client = _client(uri)
    exp = client.get_experiment_by_name("resend") or client.get_experiment(client.create_experiment("resend"))
    run_id = client.create_run(exp.experiment_id).info.run_id
    batch = [Metric(f"m{k}", float(step) + k, 1_700_000_000_000 + step, step) for step in range(50) for k in range(4)]
    client.log_batch(run_id, metrics=batch)
    client.log_batch(run_id, metrics=batch)              # the answer was lost: the spool sends it again
    client.log_batch(run_id, metrics=batch[10:30])       # a partly delivered batch, again
    for k in range(4):
        hist = client.get_metric_history(run_id, f"m{k}")
        assert sorted(m.step for m in hist) == list(range(50)), f"m{k}: {len(hist)} points for 50 steps"
    # the same (key, step) with another timestamp is a new point: only a faithful re-send is absorbed
    client.log_batch(run_id, metrics=[Metric("m0", 0.0, 1_800_000_000_000, 0)])
    assert len(client.get_metric_history(run_id, "m0")) == 51


@pytest.mark.slow
def test_resending_a_metric_batch_adds_no_point_sqlite(server):
    assert_metric_resend_is_idempotent(server.url)


def burst_of_writers(uri: str, writers: int, calls: int) -> tuple[int, list[str]]:
    """`writers` threads, one run each, each sending `calls` log_batch calls of 4 metrics at the same moment
    (the measurement of issue 19). Returns (calls that succeeded, errors)."""
    from mlflow.entities import Metric

    client = mlflow_client(uri)
    exp = client.get_experiment_by_name("burst") or client.get_experiment(client.create_experiment("burst"))
    runs = [client.create_run(exp.experiment_id).info.run_id for _ in range(writers)]
    barrier, ok, errors, lock = threading.Barrier(writers), [0], [], threading.Lock()

    def write(run_id):
        barrier.wait(60)
        for c in range(calls):
            try:
                client.log_batch(run_id, metrics=[Metric(f"m{k}", float(c), 1_700_000_000_000 + c, c)
                                                  for k in range(4)])
                with lock:
                    ok[0] += 1
            except Exception as exc:    # counted, not raised: the assertion reports them all
                with lock:
                    errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")

    threads = [threading.Thread(target=write, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    for run_id in runs:
        assert sorted(m.step for m in client.get_metric_history(run_id, "m3")) == list(range(calls))
    return ok[0], errors


@pytest.mark.slow
def test_64_simultaneous_writers_never_wedge_the_lean_sqlite_server(server):
    """Issue 19's measurement: 64 writers x 5 calls at once got 23 of 320 through before the pool fix."""
    done, errors = burst_of_writers(server.url, writers=64, calls=5)
    assert done == 64 * 5 and errors == [], errors[:5]


class LosesCreateRunAnswer:
    """The real client, except that the first create_run is executed by the server and its answer then lost
    (as when the read timeout fires while the server is still working)."""

    def __init__(self, real):
        self.real, self.lost = real, 0

    def create_run(self, *args, **kwargs):
        run = self.real.create_run(*args, **kwargs)
        if self.lost == 0:
            self.lost += 1
            import requests
            raise requests.ReadTimeout("Read timed out. (injected: the server created the run)")
        return run

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.mark.slow
def test_a_lost_create_run_answer_does_not_make_a_second_run(server, tmp_path):
    spool = tmp_path / "lost_create"
    tracker = RunTracker(server.url, "lost-create", spool_dir=spool, run_name="t", flush_interval=0.05,
                         max_backoff=0.2)
    tracker.gate = SendGate(SenderSettings(backoff_first_s=0.05, backoff_max_s=0.1))
    lossy = LosesCreateRunAnswer(_client(server.url))
    tracker._client = lossy
    tracker.start(wait=0)
    tracker.log_metrics({"loss": 1.0}, step=1)
    assert tracker.close("FINISHED", timeout=60), tracker.last_error
    assert lossy.lost == 1
    client = _client(server.url)
    exp = client.get_experiment_by_name("lost-create")
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs] == [tracker.run_id], "a second run was created"
    assert runs[0].data.tags[SPOOL_ID_TAG] == tracker.spool_id and runs[0].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(tracker.run_id, "loss")] == [1]

    # a new process on the same spool (the first was killed after sending create_run) finds it too
    again = RunTracker(server.url, "lost-create", spool_dir=tmp_path / "killed", run_name="k")
    again._create_attempted = True          # as recorded in run.json before the request left
    again.log_metrics({"loss": 2.0}, step=1)
    assert again.flush(60), again.last_error
    first = again.run_id
    reopened = RunTracker(server.url, "lost-create", spool_dir=tmp_path / "killed2", run_name="k2")
    reopened.spool_id, reopened._create_attempted = again.spool_id, True
    reopened.log_metrics({"loss": 3.0}, step=2)
    assert reopened.flush(60) and reopened.run_id == first, "the run made by the first attempt was not found"


@pytest.mark.slow
def test_a_backlog_is_reported_in_the_log_and_the_run_then_cleared(server, tmp_path, caplog):
    spool = tmp_path / "backlog"
    tracker = RunTracker(server.url, "backlog", spool_dir=spool, run_name="b")
    tracker.gate = SendGate(SenderSettings(backlog_warn_bytes=10_000))
    for step in range(1, 1201):                      # ~4 batches of 1,000 points, spooled while "offline"
        tracker.log_metrics({f"m{k}": float(step) for k in range(3)}, step=step)
    with caplog.at_level(logging.INFO, logger="tracking"):
        assert tracker.flush(120), tracker.last_error
    messages = [r.getMessage() for r in caplog.records]
    assert any("not yet sent" in m for m in messages if "KiB" in m), messages
    assert any("backlog drained" in m for m in messages), messages
    client = _client(server.url)
    assert client.get_run(tracker.run_id).data.tags[BACKLOG_TAG] == "0"
    assert len(client.get_metric_history(tracker.run_id, "m2")) == 1200
