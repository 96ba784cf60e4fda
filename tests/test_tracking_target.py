"""tracking.target.TrackingTarget: the URI precedence of `python -m sweeps run` (each source beats the next), the
record a sweep's state file keeps, the trip into a Ray worker (as its URI), and a real lean server started and
stopped through the object."""
from __future__ import annotations

import pickle
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tracking import TrackingTarget, mlflow_client, tracking_uri_of

CLI, FILE, ENV = "http://cli-host:5000", "http://file-host:5000", "http://env-host:5000"

# (sources given, the URI or store that wins, its source): the five sources in order, each row dropping the winner
# of the row above, so every source is shown to beat each one after it
PRECEDENCE = [
    ({"cli": CLI, "sweep_file": FILE, "env": ENV, "recorded_store": "recorded"}, CLI, "--tracking-uri"),
    ({"sweep_file": FILE, "env": ENV, "recorded_store": "recorded"}, FILE, "the sweep file's tracking_uri"),
    ({"env": ENV, "recorded_store": "recorded"}, ENV, "MLFLOW_TRACKING_URI"),
    ({"recorded_store": "recorded"}, "store:recorded", "the local store the interrupted sweep served"),
    ({}, "store:mlruns", "the default local store ./mlruns"),
]


@pytest.mark.parametrize("given, wins, source", PRECEDENCE, ids=[row[2] for row in PRECEDENCE])
def test_uri_precedence_each_source_beats_the_next(tmp_path, given, wins, source):
    environ = {"MLFLOW_TRACKING_URI": given["env"]} if "env" in given else {}
    recorded = str(tmp_path / given["recorded_store"]) if "recorded_store" in given else None
    target = TrackingTarget.resolve(cli=given.get("cli"), sweep_file=given.get("sweep_file"), environ=environ,
                                    recorded_store=recorded, cwd=tmp_path)
    assert target.source == source
    if wins.startswith("store:"):
        store = tmp_path / wins.removeprefix("store:")
        assert target.needs_server and target.store == store
        assert target.uri == f"sqlite:///{store / 'mlflow.db'}" and target.is_loopback
        assert target.artifact_location == (store / "artifacts").as_uri()
    else:
        assert not target.needs_server and target.store is None
        assert target.uri == wins and not target.is_loopback and target.artifact_location is None


def test_empty_values_fall_through_and_the_process_environment_is_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", ENV)
    assert TrackingTarget.resolve(cli="", sweep_file=None).uri == ENV          # an empty flag is not a source
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    assert TrackingTarget.resolve().store == tmp_path / "mlruns"


def test_a_target_is_a_uri_or_a_store_never_both():
    with pytest.raises(ValueError, match="exactly one"):
        TrackingTarget("http://x:5000", store="/tmp/s")
    with pytest.raises(ValueError, match="exactly one"):
        TrackingTarget()


def test_record_round_trip_and_readers_default(tmp_path):
    store = TrackingTarget(store=tmp_path / "s")
    assert store.record() == {"tracking_uri": f"sqlite:///{tmp_path / 's' / 'mlflow.db'}",
                              "local_store": str(tmp_path / "s")}
    assert TrackingTarget.from_record(store.record()) == store
    remote = TrackingTarget("http://10.0.0.5:5000")
    assert remote.record() == {"tracking_uri": "http://10.0.0.5:5000", "local_store": None}
    assert TrackingTarget.from_record(remote.record()) == remote
    assert TrackingTarget.from_record({}) is None
    assert TrackingTarget.of(None, cwd=tmp_path).uri == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert TrackingTarget.of("http://h:1").uri == "http://h:1"


def test_clients_take_a_target_or_a_uri(tmp_path):
    target = TrackingTarget(store=tmp_path / "s")
    assert tracking_uri_of(target) == target.uri and tracking_uri_of("x://y") == "x://y" and tracking_uri_of(None) is None
    assert mlflow_client(target).tracking_uri == target.uri
    assert target.client().tracking_uri == target.uri


def test_an_unserved_target_pickles_unchanged():
    remote = TrackingTarget("http://10.0.0.5:5000", source="--tracking-uri")
    back = pickle.loads(pickle.dumps(remote))
    assert back == remote and back.source == "--tracking-uri"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


@pytest.mark.slow
def test_a_local_store_is_served_while_started_and_read_directly_after(tmp_path):
    target = TrackingTarget.resolve(environ={}, cwd=tmp_path)          # source 5: ./mlruns, served on loopback
    store_uri = target.uri
    log = tmp_path / "server.log"
    with target.start(log_path=log) as live:
        assert live is target and target.serving
        url = target.uri
        assert url.startswith("http://127.0.0.1:") and _healthy(url) and log.is_file()
        assert target.start() is target and target.uri == url               # starting twice: the same server
        client = target.client()
        exp = client.create_experiment("served", artifact_location=target.artifact_location)
        run = client.create_run(exp)
        client.log_metric(run.info.run_id, "m", 1.5)
        worker = pickle.loads(pickle.dumps(target))                          # what a Ray trial receives
        assert worker.uri == url and not worker.needs_server and not worker.serving
        assert worker.client().get_run(run.info.run_id).data.metrics == {"m": 1.5}
    assert not target.serving and not _healthy(url)                          # stopped with the block
    assert target.uri == store_uri                                           # readers open the store directly
    assert target.client().get_run(run.info.run_id).data.metrics == {"m": 1.5}
    assert (Path(tmp_path) / "mlruns" / "mlflow.db").is_file()
    target.stop()                                                            # idempotent
