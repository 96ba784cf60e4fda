"""sweeps.launcher's first two steps without Ray running a trial: `resolve` (the sweep file, its storage and its
tracking target, every refusal before anything starts) and `plan` (resources, the base config the trials get);
and `status` reading the tracking target a sweep recorded. The third step (`execute`: Ray Tune, the served store,
the parent run) runs for real in tests/test_sweeps_ray.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sweeps.launcher import ResolvedSweep, SweepPlan, plan, resolve
from sweeps.spec import SweepError
from sweeps.status import sweep_status
from sweeps.storage import STATE_FILE
from tracking import TrackingTarget


@pytest.fixture
def here(tmp_path, monkeypatch):
    for key in ("SWEEPS_STORAGE", "MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def _sweep_file(tmp: Path, **extra) -> Path:
    (tmp / "models" / "sd").mkdir(parents=True, exist_ok=True)
    (tmp / "models" / "g.pt").write_bytes(b"stand-in")
    spec = {"name": "launch", "base": {"prompt": "a red square", "generator": {"checkpoint": "models/g.pt"},
                                       "guidance": {"model": "models/sd", "text_encoder": None},
                                       "train": {"iterations": 2, "device": "cpu"}},
            "grid": {"seed": [0, 1]}, "resources": {"cpu": 1}, **extra}
    path = tmp / "launch.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_resolve_then_plan_on_the_embedded_defaults(here, tmp_path):
    resolved = resolve(_sweep_file(tmp_path), skip_model_check=True)
    assert isinstance(resolved, ResolvedSweep) and not resolved.cluster and resolved.state == {}
    assert resolved.exp_dir == tmp_path / "runs" / "sweeps" / "launch"
    assert resolved.tracking.needs_server and resolved.tracking.store == tmp_path / "mlruns"
    assert not resolved.exp_dir.exists() and not (tmp_path / "mlruns").exists()    # nothing started or written
    sweep_plan = plan(resolved, verbose=0)
    assert isinstance(sweep_plan, SweepPlan) and sweep_plan.gpu_fraction is None
    assert sweep_plan.base["generator"]["checkpoint"] == str(tmp_path / "models" / "g.pt")  # workers agree
    assert sweep_plan.parent_tags["sweep.trials"] == 2
    assert sweep_plan.trials_csv.splitlines() == ["trial,seed,iterations", "0,0,2", "1,1,2"]


def test_resolve_follows_the_tracking_precedence(here, tmp_path):
    path = _sweep_file(tmp_path, tracking_uri="http://file-host:5000")
    here.setenv("MLFLOW_TRACKING_URI", "http://env-host:5000")
    assert resolve(path, skip_model_check=True).tracking.uri == "http://file-host:5000"
    assert resolve(path, tracking_uri="http://cli-host:5000", skip_model_check=True).tracking.uri == \
        "http://cli-host:5000"
    assert resolve(_sweep_file(tmp_path), skip_model_check=True).tracking.uri == "http://env-host:5000"


def test_a_cluster_without_a_tracking_uri_is_refused_before_anything_starts(here, tmp_path):
    path = _sweep_file(tmp_path)
    with pytest.raises(SweepError, match="no MLflow tracking URI is known") as err:
        resolve(path, address="10.0.0.5:6379", skip_model_check=True)
    assert "--tracking-uri" in str(err.value) and not (tmp_path / "runs").exists()
    remote = resolve(path, address="10.0.0.5:6379", tracking_uri="http://10.0.0.5:5000", skip_model_check=True)
    assert remote.cluster and not remote.tracking.needs_server
    assert plan(remote, verbose=0).base["generator"]["checkpoint"] == "models/g.pt"   # the job's own paths


def test_a_new_run_over_earlier_results_is_refused(here, tmp_path):
    path = _sweep_file(tmp_path)
    exp_dir = tmp_path / "runs" / "sweeps" / "launch"
    exp_dir.mkdir(parents=True)
    (exp_dir / STATE_FILE).write_text("{}")
    with pytest.raises(SweepError, match="already has results.*--resume"):
        resolve(path, skip_model_check=True)
    with pytest.raises(SweepError, match="no interrupted sweep"):
        resolve(path, resume=True, skip_model_check=True)


def test_status_reads_the_recorded_store_and_the_flag_beats_it(here, tmp_path):
    target = TrackingTarget(store=tmp_path / "mlruns")
    client = target.client()                                  # the store as a finished sweep leaves it
    exp = client.create_experiment("launch", artifact_location=target.artifact_location)
    parent = client.create_run(exp, tags={"sweep.role": "parent"}).info.run_id
    client.create_run(exp, tags={"mlflow.parentRunId": parent})
    client.set_terminated(parent, "FINISHED")
    exp_dir = tmp_path / "runs" / "sweeps" / "launch"
    exp_dir.mkdir(parents=True)
    (exp_dir / STATE_FILE).write_text(json.dumps({"name": "launch", "parent_run_id": parent, **target.record()}))
    text = sweep_status("launch")
    assert f"MLflow ({target.uri}): parent run {parent} FINISHED; child runs: 1 running" in text, text
    other = f"sqlite:///{tmp_path / 'other' / 'mlflow.db'}"
    (tmp_path / "other").mkdir()
    text = sweep_status("launch", tracking_uri=other)
    assert f"MLflow ({other}): unreachable" in text, text
