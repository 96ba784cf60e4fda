"""Exactly-once metric history: TrackingCallback over a real MLflow store, then the REAL loop in a REAL Ray trial.

The end-to-end test: `python -m sweeps run` (embedded Ray, loopback MLflow server over ./mlruns) runs one trial of
`trainables.adaptation.loop.adapt` on the tiny models, checkpoint_every 10. Its worker SIGKILLs itself right after
step 17 was handed to the callbacks (17 is not a checkpoint step), once: the marker file it writes first
lets the retry through. The retry resumes from step 10 and replays 11..17. Afterwards MLflow holds exactly
one point per step for every step metric, the grid of the replayed step 15 was not uploaded again, and the
adapted generator is bitwise the generator of an uninterrupted run of the same config (CPU, one thread).

Both tests run on two stores: the sweep's own SQLite store, and a long-lived `mlflow server` (2 workers, proxied
artifacts) on a REAL PostgreSQL cluster the test starts (tracking.postgres.LocalPostgres; a missing PostgreSQL
fails with the install command).
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_adapt_dict
from test_sweeps_ray import driver_log, finish, mlflow_runs, start_driver, sweep_env
from trainables.adaptation.callbacks import Callback
from trainables.config_io import validate_config
from trainables.adaptation.loop import adapt
from sweeps.grid_images import GRID_KEY, parse_image_name
from tracking import LocalMlflowServer, LocalPostgres, RunTracker
from trainables.adaptation.tune import TrackingCallback

ITERATIONS, CHECKPOINT_EVERY, SAMPLE_EVERY, KILL_AT = 24, 10, 5, 17


class _KillOnceAfter(Callback):
    """SIGKILLs its own process after step `step` reached every earlier callback, unless `marker` exists."""

    def __init__(self, step: int, marker: Path):
        self.step, self.marker = step, marker

    def on_step(self, step, metrics):
        if step == self.step and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))   # first, so the retry survives this step
            os.kill(os.getpid(), signal.SIGKILL)


def adapt_killed_once(cfg, callbacks=(), resume_from=None):
    """The sweep's entrypoint: trainables.adaptation.loop.adapt with the killer as the last callback."""
    killer = _KillOnceAfter(int(os.environ["EXACTLY_ONCE_KILL_AT"]), Path(cfg.output_dir) / "killed")
    return adapt(cfg, callbacks=[*callbacks, killer], resume_from=resume_from, progress=False)


class Store:
    """Where a test's runs go: None (the test's own SQLite store) or a PostgreSQL-backed server."""

    def __init__(self, kind: str, server: LocalMlflowServer | None = None):
        self.kind, self.server = kind, server

    def uri(self, sqlite_uri: str) -> str:
        return self.server.url if self.server else sqlite_uri

    def artifact_dir(self, artifact_uri: str) -> Path:
        """The local folder that holds a run's artifacts (the server's --artifacts-destination when proxied)."""
        if self.server is None:
            return Path(artifact_uri.removeprefix("file://"))
        return self.server.store_dir / "artifacts" / artifact_uri.removeprefix("mlflow-artifacts:/")


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def store(request, tmp_path_factory):
    if request.param == "sqlite":
        yield Store("sqlite")
        return
    pg = LocalPostgres(tmp_path_factory.mktemp("pg") / "cluster")
    server = None
    try:
        pg.start()
        server = LocalMlflowServer(tmp_path_factory.mktemp("pg_server"), backend_uri=pg.uri, workers=2)
        yield Store("postgres", server.start(timeout=240))
    finally:
        if server is not None:
            server.stop()
        pg.stop(remove=True)


def _grid(path: Path, text: str) -> Path:
    path.write_bytes(b"\x89PNG stand-in " + text.encode())
    return path


def test_continuing_tracker_drops_the_steps_and_grids_mlflow_holds(tmp_path, store):
    """Attempt 1 delivers steps 1..7 (grid at 5) and dies; attempt 2 reopens the run from its spool, resumes
    at step 4 and replays 5..10: MLflow ends with steps 1..10 once each, grid 5 uploaded once."""
    uri = store.uri(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    spool, samples = tmp_path / "spool", tmp_path / "samples"
    samples.mkdir()
    first = RunTracker(uri, "once-unit", spool_dir=spool, run_name="t").start()
    cb = TrackingCallback(first)
    cb.on_start(0, None)
    for step in range(1, 8):
        cb.on_step(step, {"loss/a": 1.0 / step, "train/b": float(step)})
        if step == 5:
            cb.on_samples(step, _grid(samples / "step_000005.png", "attempt 1"))
    assert first.flush(60), first.last_error
    assert cb.dropped_steps == 0

    second = RunTracker(uri, "once-unit", spool_dir=spool, run_name="t")
    assert second.run_id == first.run_id, "the spool must reopen the same run"
    second.start()
    cb2 = TrackingCallback(second)
    cb2.on_start(4, None)                    # resumed from the step-4 checkpoint
    for step in range(5, 11):
        cb2.on_step(step, {"loss/a": 1.0 / step, "train/b": float(step)})
        if step in (5, 10):
            cb2.on_samples(step, _grid(samples / f"step_{step:06d}.png", "attempt 2"))
    assert second.close("FINISHED", timeout=60)
    assert cb2.delivered_step == 7 and cb2.dropped_steps == 3

    client = second.client()
    for key in ("loss/a", "train/b"):
        history = client.get_metric_history(first.run_id, key)
        assert sorted(m.step for m in history) == list(range(1, 11)), key
    assert {m.step: m.value for m in client.get_metric_history(first.run_id, "train/b")} == \
        {s: float(s) for s in range(1, 11)}
    assert second.last_logged_step("train/b") == 10 and second.last_logged_step("never/logged") is None
    names = {Path(a.path).name for a in client.list_artifacts(first.run_id, "samples")}
    assert names == {"step_000005.png", "step_000010.png"}
    stored = store.artifact_dir(client.get_run(first.run_id).info.artifact_uri) / "samples"
    assert (stored / "step_000005.png").read_bytes().endswith(b"attempt 1"), "grid 5 was uploaded again"
    assert (stored / "step_000010.png").read_bytes().endswith(b"attempt 2")


def _base(tiny_models) -> dict:
    base = tiny_adapt_dict(tiny_models, Path("unused"), train__iterations=ITERATIONS,
                           train__sample_every=SAMPLE_EVERY, train__threads=1)
    base.pop("output_dir")
    return base


@pytest.mark.slow
def test_sigkill_between_checkpoints_gives_one_point_per_step_and_the_uninterrupted_weights(tiny_models, tmp_path,
                                                                                           store):
    spec = {
        "name": "once", "base": _base(tiny_models), "grid": {"seed": [42]}, "resources": {"cpu": 1},
        "retries": 1, "checkpoint_every": CHECKPOINT_EVERY, "storage_path": str(tmp_path / "storage"),
        "entrypoint": "test_exactly_once:adapt_killed_once",
    }
    path = tmp_path / "once.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    extra = {"MLFLOW_TRACKING_URI": store.server.url} if store.server else {}
    proc = start_driver(tmp_path, str(path), env=sweep_env(EXACTLY_ONCE_KILL_AT=KILL_AT, **extra))
    rc = finish(proc, 600)
    assert rc == 0, driver_log(tmp_path)

    out = tmp_path / "storage" / "once" / "trials" / "trial_000" / "adapt"
    assert (out / "killed").is_file(), "the worker was never killed"
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    replay = list(range(CHECKPOINT_EVERY + 1, KILL_AT + 1))
    assert logged == list(range(1, KILL_AT + 1)) + replay + list(range(KILL_AT + 1, ITERATIONS + 1)), \
        "the loop did not replay steps 11..17 from the step-10 checkpoint"

    client, parents, children = mlflow_runs(store.uri(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"), "once")
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    run = children[0]
    assert run.data.tags["sweep.attempts"] == "2" and run.data.tags["sweep.resumed_from_step"] == "10"
    keys = set(run.data.metrics)
    assert {"train/grad_norm", "train/t", "perf/step_s"} <= keys, keys
    for key in sorted(keys):
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
        # step metrics: one point per step; the trial's phase timings: one point, from the attempt that finished
        want = [ITERATIONS] if key.startswith("perf/phase/") else list(range(1, ITERATIONS + 1))
        assert steps == want, f"{key}: {steps}"

    # grids: every one is there; the replayed step 15's was not sent again. The store's copy was written
    # before the replay re-rendered the local file, so it is older than that file (MLflow's local artifact
    # repository writes a new file, with a new mtime, on every upload).
    samples = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "samples")}
    assert samples == {"step_000005.png", "step_000010.png", "step_000015.png", "step_000020.png", "final.png"}
    stored = store.artifact_dir(run.info.artifact_uri) / "samples" / "step_000015.png"
    assert stored.stat().st_mtime_ns < (out / "samples" / "step_000015.png").stat().st_mtime_ns, \
        "the replayed step's grid was uploaded again"
    assert {"generator", "config"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    # the grids as MLflow image charts (sweeps/grid_images.py): one image per sampled step, step 15 not twice
    images = sorted(k for k in (parse_image_name(a.path) for a in client.list_artifacts(run.info.run_id, "images")) if k)
    assert images == [(GRID_KEY, s) for s in (5, 10, 15, 20, ITERATIONS)], images

    # the same config, uninterrupted, in this process
    ref_cfg = validate_config({**_base(tiny_models), "seed": 42, "output_dir": str(tmp_path / "reference")})
    threads = torch.get_num_threads()
    try:
        reference = adapt(ref_cfg, progress=False)
    finally:
        torch.set_num_threads(threads)
    a = torch.load(reference.generator_path)["g_ema"]
    b = torch.load(out / "generator.pt")["g_ema"]
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"resumed weights differ from the uninterrupted run in {differ[:5]}"
