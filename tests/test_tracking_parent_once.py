"""The sweep's parent run is created exactly once: a create whose response is lost (the request reached the
store, the reply did not) and is retried, or a driver killed after creating it and before recording its id, then
resumed, finds the run its launch created instead of making a second one. A real SQLite MLflow store; the lost
reply is a wrapper that lets the real create_run happen and then raises a ConnectionError (the network fault the
retry exists for)."""
from __future__ import annotations

import pytest

from tracking import mlflow_client, start_parent_run
from tracking.runs import LAUNCH_ID_TAG


def _lose_first_reply(monkeypatch, uri):
    client = mlflow_client(uri)
    real = type(client).create_run
    calls = {"n": 0}

    def create_then_drop_reply(self, *args, **kwargs):
        run = real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("connection reset by peer (test: the reply was lost)")
        return run

    monkeypatch.setattr(type(client), "create_run", create_then_drop_reply)
    return calls


def _runs(uri, name):
    client = mlflow_client(uri)
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id])


@pytest.mark.parametrize("launch_id, expected_runs", [("launch-1", 1), (None, 2)])
def test_a_lost_create_reply_is_retried_into_the_same_run(tmp_path, monkeypatch, launch_id, expected_runs):
    """With a launch id the retry finds the run; without one (the old behaviour) the same fault made two."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    calls = _lose_first_reply(monkeypatch, uri)
    rid = start_parent_run(uri, "sweep", run_name="sweep", tags={"sweep.role": "parent"},
                           artifact_location=(tmp_path / "a").as_uri(), launch_id=launch_id)
    runs = _runs(uri, "sweep")
    assert calls["n"] == expected_runs and len(runs) == expected_runs
    assert rid in {r.info.run_id for r in runs}
    if launch_id:
        assert runs[0].data.tags[LAUNCH_ID_TAG] == launch_id and runs[0].data.tags["sweep.role"] == "parent"


def test_a_resumed_launch_finds_its_run_and_another_launch_makes_its_own(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    kw = dict(run_name="sweep", tags={"sweep.role": "parent"}, artifact_location=(tmp_path / "a").as_uri())
    first = start_parent_run(uri, "sweep", launch_id="launch-1", **kw)
    again = start_parent_run(uri, "sweep", launch_id="launch-1", **kw)     # killed before the id was recorded
    other = start_parent_run(uri, "sweep", launch_id="launch-2", **kw)     # a new launch of the same sweep
    assert first == again != other and len(_runs(uri, "sweep")) == 2


def test_the_launcher_records_the_launch_id_before_the_run(tmp_path, monkeypatch):
    """The state file holds the launch id when the parent run is created (a kill in between is resumable)."""
    import sweeps.launcher as L
    from sweeps.storage import read_state

    seen = {}

    def fake_start(tracking, name, **kw):
        seen["state"] = read_state(resolved.exp_dir)
        seen["launch_id"] = kw["launch_id"]
        return "run-1"

    class R:   # the fields _open_parent_run reads of a resolved launch
        sweep = type("S", (), {"spec": type("P", (), {"name": "s"}), "text": "name: s"})
        file = str(tmp_path / "s.yaml")
        resume, state, spec_sha256 = False, {}, "abc"
        exp_dir = tmp_path / "st" / "s"
        tracking = type("T", (), {"record": lambda self: {"tracking_uri": "x"}, "artifact_location": None})()

    resolved = R()
    plan = type("Plan", (), {"resolved": resolved, "parent_tags": {}, "trials_csv": ""})()
    monkeypatch.setattr(L, "start_parent_run", fake_start)
    assert L._open_parent_run(plan, "commit") == "run-1"
    assert seen["state"]["launch_id"] == seen["launch_id"] and "parent_run_id" not in seen["state"]
    assert read_state(resolved.exp_dir)["parent_run_id"] == "run-1"
    # resumed after a kill between the two writes: the same launch id, so the run is found, not re-made
    resolved.resume, resolved.state = True, read_state(resolved.exp_dir) | {"parent_run_id": None}
    resolved.state.pop("parent_run_id")
    L._open_parent_run(plan, "commit")
    assert seen["launch_id"] == read_state(resolved.exp_dir)["launch_id"]
