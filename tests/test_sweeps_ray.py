"""The sweep launcher on an embedded Ray (real Ray Tune, real MLflow server, real processes):

- a trial whose worker is SIGKILLed mid-run (after logging a step its checkpoint does not cover) is retried
  from its checkpoint and ends at the configured step; its MLflow child run continues (one run, every step
  exactly once: the replayed step is dropped); concurrent trials share the default store;
- an interrupted driver resumes with --resume without rerunning finished trials;
- the MLflow server stopped mid-trial and restarted: no metric is lost.

The trials run `fake_adapt` (below): the Loop API's shape (callbacks, checkpoints, resume_from) without the
models, so these tests exercise the sweep layer alone, in seconds. tests/test_platform_local.py runs the
real loop on tiny models through `ray job submit`.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

pytestmark = pytest.mark.slow


# ---------------------------------------------------------------------------------------------- the stand-in loop
def fake_adapt(cfg, callbacks=(), resume_from=None):
    """adapt()'s contract: callbacks on_start/on_step/on_samples/on_checkpoint/on_end, resumable checkpoints.

    Test controls (environment): FAKE_STEP_DELAY seconds per step; FAKE_KILL_AT=N kills trial_000's worker
    process (SIGKILL) once right after step N's metrics went to the callbacks (N not a checkpoint step: the
    retry replays it, and MLflow must still hold it once); FAKE_PAUSE_AT=N + FAKE_PAUSE_DIR make trial_000 write
    PAUSE_DIR/reached at step N and wait for PAUSE_DIR/go.
    """
    from trainables.adaptation.callbacks import AdaptResult, CallbackList

    out = Path(cfg.output_dir)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    cbs = CallbackList(callbacks)
    start = json.loads((Path(resume_from) / "fake_state.json").read_text())["step"] if resume_from else 0
    with (out / "starts.txt").open("a") as fh:
        fh.write(f"{start}\n")
    cbs.on_start(start, cfg)
    delay = float(os.environ.get("FAKE_STEP_DELAY", "0.2"))
    first = cfg.name.endswith("_000")
    metrics = {}
    for step in range(start + 1, cfg.train.iterations + 1):
        time.sleep(delay)
        if first and os.environ.get("FAKE_PAUSE_AT") == str(step):
            pause = Path(os.environ["FAKE_PAUSE_DIR"])
            (pause / "reached").touch()
            while not (pause / "go").exists():
                time.sleep(0.1)
        metrics = {"loss/fake": 1.0 / step, "perf/it_per_s": 1.0 / max(delay, 1e-3), "train/grad_norm": float(step)}
        cbs.on_step(step, metrics)
        if first and os.environ.get("FAKE_KILL_AT") == str(step) and not (out / "killed").exists():
            (out / "killed").write_text(str(os.getpid()))   # after step N was logged: the retry replays it
            os.kill(os.getpid(), signal.SIGKILL)
        if cfg.train.sample_every and step % cfg.train.sample_every == 0 and step < cfg.train.iterations:
            grid = out / "samples" / f"step_{step:06d}.png"
            grid.write_bytes(b"\x89PNG\r\n\x1a\n stand-in")
            cbs.on_samples(step, grid)
        if cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0 and step < cfg.train.iterations:
            ckpt = out / "checkpoints" / f"step_{step:06d}"
            ckpt.mkdir(parents=True, exist_ok=True)
            (ckpt / "fake_state.json").write_text(json.dumps({"step": step}))
            cbs.on_checkpoint(step, ckpt)
    (out / "generator.pt").write_bytes(b"weights")
    final = out / "samples" / "final.png"
    final.write_bytes(b"\x89PNG\r\n\x1a\n final")
    cbs.on_samples(cfg.train.iterations, final)
    result = AdaptResult(generator_path=out / "generator.pt", final_grid_path=final, output_dir=out,
                         steps=cfg.train.iterations, metrics=metrics)
    cbs.on_end(result)
    return result


# ---------------------------------------------------------------------------------------------- helpers
def make_sweep(tmp: Path, name: str, *, seeds, iterations=6, retries=0, concurrent=2, **extra) -> Path:
    models = tmp / "models"
    for sub in ("unet", "vae", "scheduler"):
        (models / "sd" / sub).mkdir(parents=True, exist_ok=True)
    (models / "g.pt").write_bytes(b"stand-in")
    spec = {
        "name": name,
        "base": {"prompt": "a red square", "generator": {"checkpoint": str(models / "g.pt")},
                 "guidance": {"model": str(models / "sd"), "text_encoder": None},
                 "train": {"iterations": iterations, "sample_every": 2, "device": "cpu"}},
        "grid": {"seed": list(seeds)},
        "resources": {"cpu": 1},
        "max_concurrent_trials": concurrent,
        "retries": retries,
        "checkpoint_every": 2,
        "storage_path": str(tmp / "storage"),
        "entrypoint": "test_sweeps_ray:fake_adapt",
        **extra,
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def sweep_env(**extra) -> dict:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0", MLFLOW_DISABLE_TELEMETRY="true",
               PYTHONPATH=os.pathsep.join([str(REPO), str(TESTS)]), RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_driver(tmp: Path, *args: str, env: dict) -> subprocess.Popen:
    log = (tmp / f"driver_{int(time.time() * 1000)}.log").open("w")
    return subprocess.Popen([sys.executable, "-m", "sweeps", "run", *args], cwd=tmp, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # only the process group this test started
        proc.wait(10)
        raise


def driver_log(tmp: Path) -> str:
    return "\n".join(p.read_text()[-6000:] for p in sorted(tmp.glob("driver_*.log")))


def mlflow_runs(uri: str, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("sweep.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
    return client, parents, children


def steps_of(client, run_id: str, key: str = "loss/fake") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


# ---------------------------------------------------------------------------------------------- tests
def test_killed_worker_is_retried_from_checkpoint_and_mlflow_run_continues(tmp_path):
    path = make_sweep(tmp_path, "retry", seeds=[1, 2], iterations=6, retries=1)
    env = sweep_env(FAKE_KILL_AT=3, FAKE_STEP_DELAY=0.6)
    proc = start_driver(tmp_path, str(path), env=env)
    rc = finish(proc, 400)
    log = driver_log(tmp_path)
    assert rc == 0, log
    trials = tmp_path / "storage" / "retry" / "trials"
    assert (trials / "trial_000" / "adapt" / "killed").exists(), "the worker was never killed"
    starts = (trials / "trial_000" / "adapt" / "starts.txt").read_text().split()
    assert starts == ["0", "2"], f"expected a restart from the step-2 checkpoint, got starts {starts}"
    assert (trials / "trial_001" / "adapt" / "starts.txt").read_text().split() == ["0"]

    # the default tracking store: ./mlruns (SQLite behind a loopback server), shared by concurrent trials
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    client, parents, children = mlflow_runs(uri, "retry")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert "sweep.yaml" in [a.path for a in client.list_artifacts(parents[0].info.run_id)]
    assert len(children) == 2, "the retried trial must continue its MLflow run, not open a second one"
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert child.info.status == "FINISHED"
        assert steps_of(client, child.info.run_id) == [1, 2, 3, 4, 5, 6]   # every step exactly once
        assert child.data.params["train.iterations"] == "6" and "guidance.cfg_scale" in child.data.params
        for tag in ("method", "prompt", "source_domain", "generator", "guidance_model", "git_commit"):
            assert tag in child.data.tags
        arts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"samples", "generator", "config"} <= arts
        assert child.data.tags["artifact.generator_path"].endswith("generator.pt")
    killed = next(c for c in children if c.data.tags["sweep.trial_name"] == "trial_000")
    assert killed.data.tags["sweep.attempts"] == "2" and killed.data.tags["sweep.resumed_from_step"] == "2"

    status = subprocess.run([sys.executable, "-m", "sweeps", "status", str(path)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert "2 done" in status.stdout and "0 failed" in status.stdout, status.stdout + status.stderr


def test_interrupted_driver_resumes_without_rerunning_finished_trials(tmp_path):
    path = make_sweep(tmp_path, "resume", seeds=[1, 2, 3], iterations=6, concurrent=1)
    env = sweep_env(FAKE_STEP_DELAY=0.5)
    trials = tmp_path / "storage" / "resume" / "trials"
    proc = start_driver(tmp_path, str(path), env=env)
    deadline = time.time() + 300
    # interrupt once trial_000 is done and the next trial has a checkpoint
    while time.time() < deadline:
        done0 = (trials / "trial_000" / "adapt" / "generator.pt").exists()
        ckpt1 = any((trials / t / "adapt" / "checkpoints").glob("step_*") for t in ("trial_001", "trial_002")
                    if (trials / t / "adapt" / "checkpoints").exists())
        if done0 and ckpt1:
            break
        assert proc.poll() is None, driver_log(tmp_path)
        time.sleep(0.2)
    else:
        pytest.fail("the sweep never got to its second trial:\n" + driver_log(tmp_path))
    os.kill(proc.pid, signal.SIGINT)          # Ctrl-C on the driver
    finish(proc, 120)
    assert not (trials / "trial_002" / "adapt" / "generator.pt").exists(), "interrupted too late to test resume"

    proc = start_driver(tmp_path, str(path), "--resume", env=env)
    rc = finish(proc, 400)
    assert rc == 0, driver_log(tmp_path)
    for name in ("trial_000", "trial_001", "trial_002"):
        assert (trials / name / "adapt" / "generator.pt").exists()
    assert (trials / "trial_000" / "adapt" / "starts.txt").read_text().split() == ["0"], "a finished trial reran"
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    client, parents, children = mlflow_runs(uri, "resume")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 3 and all(c.info.status == "FINISHED" for c in children)
    for child in children:
        assert set(steps_of(client, child.info.run_id)) == set(range(1, 7))


def test_mlflow_server_stopped_mid_trial_loses_no_metrics(tmp_path):
    from tracking import LocalMlflowServer

    server = LocalMlflowServer(tmp_path / "server_store").start()
    pause = tmp_path / "pause"
    pause.mkdir()
    try:
        path = make_sweep(tmp_path, "outage", seeds=[1], iterations=10)
        env = sweep_env(FAKE_STEP_DELAY=0.3, FAKE_PAUSE_AT=4, FAKE_PAUSE_DIR=pause)
        proc = start_driver(tmp_path, str(path), "--tracking-uri", server.url, env=env)
        deadline = time.time() + 300
        while not (pause / "reached").exists():
            assert proc.poll() is None and time.time() < deadline, driver_log(tmp_path)
            time.sleep(0.2)
        server.stop()                      # the tracking server disappears mid-trial ...
        (pause / "go").touch()             # ... while the trial keeps training
        time.sleep(6)
        assert proc.poll() is None
        spool = tmp_path / "storage" / "outage" / "trials" / "trial_000" / "mlflow_spool"
        sent = int((spool / "sent.offset").read_text()) if (spool / "sent.offset").exists() else 0
        unsent = (spool / "pending.jsonl").stat().st_size - sent
        assert unsent > 0, "nothing was waiting for the server: the outage was not observed"
        server.start()                     # back on the same port and store
        rc = finish(proc, 300)
        assert rc == 0, driver_log(tmp_path)
        client, parents, children = mlflow_runs(server.url, "outage")
        assert len(children) == 1 and children[0].info.status == "FINISHED"
        assert steps_of(client, children[0].info.run_id) == list(range(1, 11))
        assert (spool / "pending.jsonl").stat().st_size == int((spool / "sent.offset").read_text())
    finally:
        server.stop()
