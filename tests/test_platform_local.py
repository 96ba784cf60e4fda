"""platform/local/up + `ray job submit` + platform/local/down, with the REAL loop on tiny models.

A Ray head (`ray start --head`, its own temp dir and ports) and an MLflow server on 127.0.0.1; a two-trial
sweep submitted as a Ray job with platform/ray/runtime_env.yaml; the MLflow store then holds one parent run
and one child run per trial with params, step metrics and artifacts.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import tiny_adapt_dict

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_job_submit_of_a_tiny_sweep_tracks_parent_and_children(tmp_path, tiny_models):
    ports = {k: str(free_port()) for k in ("RAY_PORT", "DASHBOARD_PORT", "DASHBOARD_AGENT_PORT",
                                            "RAY_CLIENT_PORT", "MLFLOW_PORT")}
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")   # short: socket paths are limited to 107 bytes
    env = dict(os.environ, **ports, NUM_CPUS="2", RAY_TEMP_DIR=ray_tmp, PLATFORM_STATE_DIR=str(tmp_path / "state"),
               MLRUNS_DIR=str(tmp_path / "mlruns"), RAY_AUTH_MODE="disabled", HF_HUB_OFFLINE="1")
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    up = REPO / "platform" / "local" / "up"
    down = REPO / "platform" / "local" / "down"
    try:
        out = subprocess.run([str(up)], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"http://127.0.0.1:{ports['DASHBOARD_PORT']}" in out.stdout
        again = subprocess.run([str(up)], env=env, capture_output=True, text=True, timeout=120)
        assert "already running" in again.stdout                      # idempotent

        base = tiny_adapt_dict(tiny_models, tmp_path / "unused")
        base["train"].update(iterations=4, sample_every=2, checkpoint_every=2, threads=1)
        evaluation = {  # the trial's last stage, offline: tiny random CLIP, a plugin metric (plumbing only)
            "num_samples": 8, "batch_size": 8, "image_size": None, "device": "cpu", "progress": False,
            "cache_dir": str(tmp_path / "eval_cache"), "fid": {"enabled": False},
            "clip": {"models": [{"name": str(tiny_models["clip_config"]), "pretrained": str(tiny_models["clip_weights"])}]},
            "diversity": {"lpips": {"enabled": False}, "feature": {"enabled": False}},
            "extra_metrics": ["evaluation.testing:brightness_plugin"],
        }
        # a Fusion trial and a NADA trial (zipped with their CFG scale, which NADA ignores)
        spec = {"name": "tiny-job", "base": base, "zip": [{"method": ["fusion", "nada"], "guidance.cfg_scale": [5.0, 7.5]}],
                "resources": {"cpu": 1}, "max_concurrent_trials": 2, "storage_path": str(tmp_path / "storage"),
                "evaluation": evaluation}
        sweep = tmp_path / "tiny.yaml"
        sweep.write_text(yaml.safe_dump(spec, sort_keys=False))

        job_env = dict(env, PATH=f"{VENV_BIN}{os.pathsep}{env['PATH']}")
        dashboard = f"http://127.0.0.1:{ports['DASHBOARD_PORT']}"
        job = subprocess.run(
            [str(VENV_BIN / "ray"), "job", "submit", "--address", dashboard, "--working-dir", str(REPO),
             "--runtime-env", str(REPO / "platform/ray/runtime_env.yaml"), "--",
             "python", "-m", "sweeps", "run", str(sweep)],
            env=job_env, capture_output=True, text=True, timeout=600)
        assert job.returncode == 0 and "succeeded" in job.stdout, job.stdout[-5000:] + job.stderr[-3000:]

        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"http://127.0.0.1:{ports['MLFLOW_PORT']}")
        exp = client.get_experiment_by_name("tiny-job")
        runs = client.search_runs([exp.experiment_id])
        parents = [r for r in runs if r.data.tags.get("sweep.role") == "parent"]
        children = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert len(children) == 2
        assert {(c.data.params["method"], c.data.params["guidance.cfg_scale"]) for c in children} == \
            {("fusion", "5.0"), ("nada", "7.5")}
        for child in children:
            assert child.info.status == "FINISHED"
            assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
            assert child.data.tags["method"] == child.data.params["method"]
            assert child.data.tags["prompt"] == "a red square" and child.data.tags["source_domain"] == "a circle"
            history = client.get_metric_history(child.info.run_id, "train/grad_norm")
            assert sorted(m.step for m in history) == [1, 2, 3, 4]
            samples = {a.path for a in client.list_artifacts(child.info.run_id, "samples")}
            assert "samples/final.png" in samples and "samples/step_000002.png" in samples
            assert [a.path for a in client.list_artifacts(child.info.run_id, "generator")] == ["generator/generator.pt"]
            assert Path(child.data.tags["artifact.generator_path"]).is_file()
            evals = {k for k in child.data.metrics if k.startswith("eval/") or "brightness" in k}
            assert any("clip" in k for k in evals) and any("brightness" in k for k in evals), child.data.metrics
    finally:
        res = subprocess.run([str(down)], env=env, capture_output=True, text=True, timeout=120)
        print(res.stdout, res.stderr)
        left = subprocess.run(["pgrep", "-f", "--", ray_tmp + "/"], capture_output=True, text=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert left.stdout.strip() == "", f"Ray processes left behind: {left.stdout}"


LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}

DRIVER = """
import ray, time
ray.init(address="127.0.0.1:{port}")
@ray.remote
class Holder:
    def ping(self):
        return 1
h = Holder.remote()
assert ray.get(h.ping.remote()) == 1
print("ready", flush=True)
time.sleep(120)
"""


def _recorded(state: Path) -> list[tuple[int, str]]:
    rows = []
    for name in ("ray.pids", "mlflow.pids"):
        path = state / name
        assert path.is_file(), f"platform/local/up recorded no {name} in {state}"
        rows += [(int(line.split()[0]), line.split()[2]) for line in path.read_text().splitlines() if line.strip()]
    return rows


def _tree(pids) -> dict[int, float]:
    """pid -> create time for the given processes and all their descendants (those alive now)."""
    out = {}
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                out[p.pid] = p.create_time()
        except psutil.NoSuchProcess:
            pass
    return out


def _postmaster(pg_dir: Path) -> int | None:
    pid_file = pg_dir / "data" / "postmaster.pid"
    return int(pid_file.read_text().split()[0]) if pid_file.exists() else None


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_up_listens_on_loopback_only_and_down_stops_every_recorded_pid(tmp_path, store):
    """After `up` (plus a client driver holding a Ray actor, i.e. a worker), no LISTEN socket of the started process
    tree is on a non-loopback address; after `down`, none of those processes is alive. `--store postgres`: the
    MLflow server (4 workers) runs on the project's own PostgreSQL cluster, which listens on loopback only, keeps
    its password off every command line, and is stopped by `down`."""
    ports = {k: str(free_port()) for k in ("RAY_PORT", "DASHBOARD_PORT", "DASHBOARD_AGENT_PORT",
                                            "RAY_CLIENT_PORT", "MLFLOW_PORT")}
    ray_tmp = tempfile.mkdtemp(prefix="rl", dir="/tmp")
    state = tmp_path / "state"
    env = dict(os.environ, **ports, NUM_CPUS="1", RAY_TEMP_DIR=ray_tmp, PLATFORM_STATE_DIR=str(state),
               MLRUNS_DIR=str(tmp_path / "mlruns"), SWEEPS_STORAGE=str(tmp_path / "sweeps"), HF_HUB_OFFLINE="1",
               PG_DIR=str(tmp_path / "pg"))
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
        env.pop(key, None)
    up, down = REPO / "platform" / "local" / "up", REPO / "platform" / "local" / "down"
    driver = None
    seen: dict[int, float] = {}
    try:
        out = subprocess.run([str(up), "--store", store], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        recorded = _recorded(state)
        if store == "postgres":
            postmaster = _postmaster(tmp_path / "pg")
            assert postmaster is not None and "PostgreSQL 127.0.0.1" in out.stdout, out.stdout
            password = (tmp_path / "pg" / "password").read_text().strip()
            cmdlines = [" ".join(psutil.Process(p).cmdline()) for p in _tree([pid for pid, _ in recorded])]
            assert cmdlines and not any(password in c for c in cmdlines), "the password is on a command line"
            with __import__("psycopg").connect((tmp_path / "pg" / "uri").read_text().strip()) as con:
                runs_table = con.execute("SELECT to_regclass('public.runs')").fetchone()[0]
            assert runs_table == "runs", "the MLflow server does not use the PostgreSQL cluster"
        assert any(name == "gcs_server" for _, name in recorded) and any(name == "raylet" for _, name in recorded)
        client_server = [p for p, _ in recorded if "ray.util.client.server" in " ".join(psutil.Process(p).cmdline())]
        assert client_server, "the Ray client server was not recorded (down would leave it running)"
        client_env = subprocess.run(["bash", "-c", f"source {state}/env && env"], capture_output=True, text=True,
                                    check=True).stdout
        assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0" in client_env and f"SWEEPS_STORAGE={tmp_path / 'sweeps'}" in client_env
        # a client driver from the same environment: its worker (the actor) must be on loopback too
        driver = subprocess.Popen([sys.executable, "-c", DRIVER.format(port=ports["RAY_PORT"])], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True,
                                  env={**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"})
        lines = []
        for line in driver.stdout:
            lines.append(line)
            if line.strip() == "ready":
                break
        assert lines and lines[-1].strip() == "ready", "".join(lines[-30:])
        seen = _tree([p for p, _ in recorded] + [driver.pid] + ([postmaster] if store == "postgres" else []))
        listening = [c for c in psutil.net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN and c.pid in seen]
        exposed = [(c.laddr.ip, c.laddr.port, psutil.Process(c.pid).name()) for c in listening
                   if c.laddr.ip not in LOOPBACK]
        assert exposed == [], f"listening beyond loopback: {exposed}"
        bound = {c.laddr.port for c in listening}
        assert {int(p) for p in ports.values()} <= bound, (ports, sorted(bound))   # every named service was seen
        if store == "postgres":
            assert int((tmp_path / "pg" / "port").read_text()) in bound
        assert len(bound) >= len(ports) + 4, sorted(bound)   # + raylet, object manager, agents, metrics, workers
        # Ray announces the loopback address, not the machine's
        assert re.search(r"Local node IP\S*: \S*127\.0\.0\.1", (state / "ray_start.log").read_text())
    finally:
        if driver is not None:
            driver.terminate()
            driver.wait(30)
        res = subprocess.run([str(down)], env=env, capture_output=True, text=True, timeout=180)
        print(res.stdout, res.stderr)
        shutil.rmtree(ray_tmp, ignore_errors=True)
        if store == "postgres":
            assert "PostgreSQL stopped" in res.stdout, res.stdout + res.stderr
            assert _postmaster(tmp_path / "pg") is None
            subprocess.run([sys.executable, "-m", "tracking", "postgres", "stop", str(tmp_path / "pg"), "--remove"],
                           cwd=REPO, timeout=120)
    ray_seen = {pid: t for pid, t in seen.items() if driver is None or pid != driver.pid}
    survivors = []
    for pid, created in ray_seen.items():
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                survivors.append((pid, proc.name(), " ".join(proc.cmdline())[:120]))
        except psutil.NoSuchProcess:
            pass
    assert ray_seen and survivors == [], f"left running after down: {survivors}"


@pytest.mark.parametrize("args, extra, expected", [
    (["--expose"], {}, "set RAY_AUTH_MODE=token"),                         # exposing needs an explicit auth choice
    ([], {"RAY_PORT": "12345"}, "worker port range 10002-19999"),         # Ray's reserved worker ports
    ([], {"RAY_CLIENT_PORT": "10002"}, "RAY_CLIENT_PORT=10002"),
    ([], {"SWEEPS_STORAGE": "runs/rel"}, "must be an absolute path"),
    (["--store", "mysql"], {}, "--store mysql: unknown store"),
])
def test_up_refuses_unsafe_or_doomed_settings_before_starting_anything(tmp_path, args, extra, expected):
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    env.update(PLATFORM_STATE_DIR=str(tmp_path / "state"), **extra)
    out = subprocess.run([str(REPO / "platform" / "local" / "up"), *args], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and expected in out.stderr, out.stdout + out.stderr
    assert not (tmp_path / "state" / "ray.pids").exists()
