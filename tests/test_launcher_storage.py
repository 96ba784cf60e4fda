"""Where sweeps live: one storage rule for run / --resume / status, refused where nothing outlives a Ray job, and a
cluster whose trials can leave this node must get shared storage and a tracking URI other machines reach.

The cluster checks read a REAL Ray cluster on this machine (ray.cluster_utils.Cluster: a head and a second raylet,
two nodes to Ray, one machine); a node on another machine cannot run here, so that case copies a real node entry
with another address (said at the helper).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from sweeps.cluster import check_cluster_reach
from sweeps.storage import STATE_FILE, resolve_storage
from sweeps.spec import SweepError, SweepSpec
from sweeps.status import sweep_status
from tracking import TrackingTarget

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for key in ("SWEEPS_STORAGE", "SWEEPS_SHARED_MOUNTS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_storage_rule_precedence_and_relative_paths(clean_env, tmp_path):
    assert resolve_storage(None) == tmp_path / "runs" / "sweeps"                   # default, from the cwd
    clean_env.setenv("SWEEPS_STORAGE", str(tmp_path / "env_store"))
    assert resolve_storage(None) == tmp_path / "env_store"
    assert resolve_storage(None, "runs/sweeps") == tmp_path / "env_store"         # the file's default: env wins
    assert resolve_storage(None, "mine") == tmp_path / "mine"                     # the file's own value
    assert resolve_storage("cli/x", "mine") == tmp_path / "cli" / "x"             # --storage above all
    assert resolve_storage("~/s").is_absolute()


def test_storage_inside_a_ray_job_copy_of_the_code_is_refused(clean_env, tmp_path):
    job_dir = tmp_path / "session_1" / "runtime_resources" / "working_dir_files" / "_ray_pkg_3f2a"
    job_dir.mkdir(parents=True)
    clean_env.chdir(job_dir)
    with pytest.raises(SweepError, match="SWEEPS_STORAGE") as err:
        resolve_storage(None, "runs/sweeps")
    assert str(job_dir) in str(err.value) and "--storage" in str(err.value)
    clean_env.setenv("SWEEPS_STORAGE", str(tmp_path / "kept"))                   # what platform/local/up exports
    assert resolve_storage(None, "runs/sweeps") == tmp_path / "kept"
    with pytest.raises(SweepError, match="runtime_resources"):
        resolve_storage("relative/again")


def test_uri_storage_is_refused_with_the_mount_fix(clean_env):
    with pytest.raises(SweepError, match="SWEEPS_SHARED_MOUNTS"):
        resolve_storage("s3://bucket/sweeps")


def test_status_finds_the_sweep_by_the_same_rule_from_anywhere(clean_env, tmp_path):
    store = tmp_path / "store"
    (store / "demo").mkdir(parents=True)
    (store / "demo" / STATE_FILE).write_text(json.dumps({"name": "demo"}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    clean_env.chdir(elsewhere)
    clean_env.setenv("SWEEPS_STORAGE", str(store))
    text = sweep_status("demo")
    assert text.splitlines()[0] == f"sweep demo ({store / 'demo'})" and "no such sweep" not in text
    clean_env.delenv("SWEEPS_STORAGE")
    assert "no such sweep here" in sweep_status("demo")
    assert "no such sweep here" not in sweep_status("demo", storage=str(store))


def test_status_cli_inside_a_job_copy_says_how_to_fix(tmp_path):
    job_dir = tmp_path / "s" / "runtime_resources" / "working_dir_files" / "_ray_pkg_1"
    job_dir.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "SWEEPS_STORAGE"}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-m", "sweeps", "status", "demo"], cwd=job_dir, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "SWEEPS_STORAGE" in out.stderr, out.stdout + out.stderr


def _sweep(**resources):
    return types.SimpleNamespace(spec=SweepSpec(name="x", base={}, resources=resources or {"cpu": 1}))


@pytest.fixture
def ray_cluster():
    import ray
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    clusters = []

    def make(*node_cpus: int):
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": node_cpus[0]})
        clusters.append(cluster)
        for cpus in node_cpus[1:]:
            cluster.add_node(num_cpus=cpus)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        return cluster

    try:
        yield make
    finally:
        ray.shutdown()
        for cluster in clusters:
            cluster.shutdown()


def _nodes():
    import ray

    return [n for n in ray.nodes() if n["Alive"]]


def _on(node: dict, address: str) -> dict:
    """A copy of a real node entry placed on another machine: a remote machine cannot run here (the only mock)."""
    return {**node, "NodeManagerAddress": address, "NodeID": "f" * 56}


@pytest.mark.slow
def test_cluster_spanning_machines_needs_shared_storage_and_a_reachable_tracking_uri(clean_env, tmp_path,
                                                                                     ray_cluster):
    ray_cluster(1, 1)                                   # two real nodes, both on this machine
    nodes = _nodes()
    assert len(nodes) == 2 and len({n["NodeManagerAddress"] for n in nodes}) == 1
    local = tmp_path / "local" / "sweeps"
    check_cluster_reach(local, "http://127.0.0.1:5000", _sweep())     # one machine: local paths and loopback work
    two_machines = [nodes[0], _on(nodes[1], "10.0.0.7")]
    with pytest.raises(SweepError, match="spans 2 machines.*not on a shared mount") as err:
        check_cluster_reach(local, "http://10.0.0.5:5000", _sweep(), nodes=two_machines)
    assert "SWEEPS_SHARED_MOUNTS" in str(err.value)
    clean_env.setenv("SWEEPS_SHARED_MOUNTS", f"/nonexistent{os.pathsep}{tmp_path / 'local'}")
    for loopback in ("http://127.0.0.1:5000", "http://localhost:5000", "sqlite:////tmp/mlflow.db",
                     TrackingTarget(store=tmp_path / "mlruns"), TrackingTarget("http://127.0.0.2:5000")):
        with pytest.raises(SweepError, match="only reaches this machine") as err:
            check_cluster_reach(local, loopback, _sweep(), nodes=two_machines)
        assert "--tracking-uri" in str(err.value) and "--expose" in str(err.value)
    check_cluster_reach(local, "http://10.0.0.5:5000", _sweep(), nodes=two_machines)   # shared + reachable
    check_cluster_reach(local, TrackingTarget("http://10.0.0.5:5000"), _sweep(), nodes=two_machines)


@pytest.mark.slow
def test_one_machine_accepts_local_paths_unless_an_autoscaler_must_add_a_node(clean_env, tmp_path, ray_cluster):
    ray_cluster(1)
    (head,) = _nodes()
    local = tmp_path / "sweeps"
    check_cluster_reach(local, "http://127.0.0.1:5000", _sweep(cpu=1))               # trials stay on this node
    exposed = [_on(head, "10.0.0.7")]                                                  # the same head, reachable
    check_cluster_reach(local, "http://127.0.0.1:5000", _sweep(cpu=1), nodes=exposed)  # ... and trials fit on it
    with pytest.raises(SweepError, match="no node at 10.0.0.7 can hold a trial"):
        check_cluster_reach(local, "http://127.0.0.1:5000", _sweep(cpu=1, gpu=1), nodes=exposed)
    loopback_head = [_on(head, "127.0.0.1")]                  # a loopback head cannot be joined from elsewhere
    check_cluster_reach(local, "http://127.0.0.1:5000", _sweep(cpu=1, gpu=1), nodes=loopback_head)
