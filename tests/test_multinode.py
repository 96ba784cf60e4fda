"""A real two-node Ray cluster on this machine loses the node its trials run on.

`ray.cluster_utils.Cluster` starts a head (no trial resource) and a second node offering the custom
resource `pin`; every node is on 127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes Ray resolve
"localhost" to 127.0.0.1 instead of the machine's address, as it does on a laptop). The sweep
(`python -m sweeps run --address ... --tracking-uri ...`, the real loop on the tiny models) asks for
`resources: {custom: {pin: 1}}`, so both trials start on the second node. When both have logged step 6
(checkpoint_every 4, so steps 5-6 are not covered), the node is killed (SIGKILL of its raylet and
workers) and a replacement node with `pin` joins, as an autoscaler would add one. Both trials resume there
from step 4 and finish; MLflow holds one point per step and every artifact. Storage is one absolute path,
which is shared storage for nodes on one machine.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, tiny_adapt_dict
from test_sweeps_ray import TESTS, driver_log, finish, mlflow_runs, start_driver, sweep_env
from trainables.adaptation.callbacks import Callback
from trainables.adaptation.loop import adapt
from tracking import LocalMlflowServer

pytestmark = pytest.mark.slow

ITERATIONS, CHECKPOINT_EVERY, SAMPLE_EVERY, PAUSE_AT = 12, 4, 3, 6
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
                "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
                "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)])}


class _HoldOnce(Callback):
    """After step `step` reached the earlier callbacks, the first attempt writes `marker` and waits to be
    killed with its node (it fails loudly if that never happens); a retry (marker present) runs on."""

    def __init__(self, step: int, marker: Path, limit_s: float = 300.0):
        self.step, self.marker, self.limit_s = step, marker, limit_s

    def on_step(self, step, metrics):
        if step == self.step and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            deadline = time.monotonic() + self.limit_s
            while time.monotonic() < deadline:
                time.sleep(0.5)
            raise RuntimeError(f"{self.marker}: the node was not removed within {self.limit_s:.0f}s")


def adapt_held_once(cfg, callbacks=(), resume_from=None):
    """The sweep's entrypoint: records which node each attempt ran on, then the real loop with _HoldOnce."""
    import ray

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "nodes.txt").open("a") as fh:
        fh.write(ray.get_runtime_context().get_node_id() + "\n")
    return adapt(cfg, callbacks=[*callbacks, _HoldOnce(PAUSE_AT, out / "held")], resume_from=resume_from,
                 progress=False)


@pytest.fixture
def loopback_cluster(monkeypatch):
    """A Ray head on 127.0.0.1 without the trial resource; nodes added by the test inherit this env."""
    from ray.cluster_utils import Cluster

    for key, value in LOOPBACK_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    temp_dir = tempfile.mkdtemp(prefix="raymn_")   # short: Ray's socket paths live under it
    node_args = dict(node_ip_address="127.0.0.1", temp_dir=temp_dir)
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, include_dashboard=False, **node_args))
    try:
        yield cluster, node_args
    finally:
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_trials_pinned_to_a_lost_node_resume_on_its_replacement(loopback_cluster, tiny_models, tmp_path):
    cluster, node_args = loopback_cluster
    server = LocalMlflowServer(tmp_path / "mlflow").start()
    try:
        doomed = cluster.add_node(num_cpus=2, resources={"pin": 2}, **node_args)
        base = tiny_adapt_dict(tiny_models, Path("unused"), train__iterations=ITERATIONS,
                               train__sample_every=SAMPLE_EVERY, train__threads=1)
        base.pop("output_dir")
        spec = {"name": "multinode", "base": base, "grid": {"seed": [1, 2]},
                "resources": {"cpu": 1, "custom": {"pin": 1}}, "max_concurrent_trials": 2, "retries": 2,
                "checkpoint_every": CHECKPOINT_EVERY, "storage_path": str(tmp_path / "storage"),
                "entrypoint": "test_multinode:adapt_held_once"}
        path = tmp_path / "multinode.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        proc = start_driver(tmp_path, str(path), "--address", cluster.address, "--tracking-uri", server.url,
                            env=sweep_env(**LOOPBACK_ENV))

        trials = [tmp_path / "storage" / "multinode" / "trials" / f"trial_{i:03d}" / "adapt" for i in (0, 1)]
        deadline = time.time() + 420
        while not all((t / "held").exists() for t in trials):
            assert proc.poll() is None, driver_log(tmp_path)
            assert time.time() < deadline, "the trials never reached step 6 on the second node:\n" + driver_log(tmp_path)
            time.sleep(0.5)
        cluster.remove_node(doomed, allow_graceful=False)          # the node dies mid-trial
        replacement = cluster.add_node(num_cpus=2, resources={"pin": 2}, **node_args)
        rc = finish(proc, 600)
        assert rc == 0, driver_log(tmp_path)

        for out in trials:
            nodes = (out / "nodes.txt").read_text().split()
            assert nodes == [doomed.node_id, replacement.node_id], f"{out}: attempts ran on {nodes}"
            steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
            assert steps == list(range(1, PAUSE_AT + 1)) + list(range(CHECKPOINT_EVERY + 1, ITERATIONS + 1)), \
                f"{out}: expected a replay from the step-{CHECKPOINT_EVERY} checkpoint, got {steps}"
            assert (out / "generator.pt").is_file()

        client, parents, children = mlflow_runs(server.url, "multinode")
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert len(children) == 2, "a resumed trial must continue its MLflow run"
        for run in children:
            assert run.info.status == "FINISHED"
            assert run.data.tags["sweep.attempts"] == "2"
            assert run.data.tags["sweep.resumed_from_step"] == str(CHECKPOINT_EVERY)
            keys = set(run.data.metrics)
            assert {"train/grad_norm", "train/t"} <= keys, keys
            for key in sorted(keys):
                got = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
                # step metrics: one point per step; phase timings: one point, from the attempt that finished
                want = [ITERATIONS] if key.startswith("perf/phase/") else list(range(1, ITERATIONS + 1))
                assert got == want, f"{run.data.tags['sweep.trial_name']} {key}: {got}"
            samples = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "samples")}
            assert samples == {"step_000003.png", "step_000006.png", "step_000009.png", "final.png"}, samples
            arts = {a.path for a in client.list_artifacts(run.info.run_id)}
            assert {"samples", "generator", "config"} <= arts, arts
    finally:
        server.stop()
