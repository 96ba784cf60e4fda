"""EG3D end to end like StyleGAN2: a sweep (embedded Ray, real MLflow server) adapts the pocket EG3D with two
Fusion variants, each trial evaluates itself over fixed (z, camera) pairs, logs a multi-view GIF, and the
parent run carries the comparison table. Tiny random models: plumbing, not image quality."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from conftest import tiny_adapt_dict, tiny_eval_block

pytestmark = pytest.mark.slow


def test_pocket_eg3d_sweep_adapts_evaluates_and_tabulates(tmp_path, tiny_models):
    from trainables.generators.eg3d import build_pocket_eg3d, save_eg3d

    eg3d = save_eg3d(build_pocket_eg3d(seed=0), tmp_path / "pocket_eg3d.pt")
    base = tiny_adapt_dict(tiny_models, tmp_path / "unused")
    base["generator"] = {"kind": "eg3d", "checkpoint": str(eg3d)}
    base["train"].update(iterations=2, sample_every=0, threads=1)
    evaluation = tiny_eval_block(tiny_models, tmp_path / "eval_cache")
    spec = {"name": "eg3d-pocket", "base": base, "grid": {"reg.directional.weight": [0.0, 0.5]},
            "resources": {"cpu": 1}, "max_concurrent_trials": 2, "storage_path": str(tmp_path / "storage"),
            "evaluation": evaluation}
    sweep = tmp_path / "eg3d.yaml"
    sweep.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, "-m", "sweeps", "run", str(sweep)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Fusion + directional" in proc.stdout  # the printed comparison table

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("eg3d-pocket")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
    parent = next(r for r in runs if r.data.tags.get("sweep.role") == "parent")
    assert len(children) == 2
    for child in children:
        assert child.info.status == "FINISHED" and child.data.params["generator.kind"] == "eg3d"
        assert "eval/clip_score" in child.data.metrics
        samples = {a.path for a in client.list_artifacts(child.info.run_id, "samples")}
        assert {"samples/final.png", "samples/orbit.gif"} <= samples
    table = {a.path for a in client.list_artifacts(parent.info.run_id, "table")}
    assert "table/table.md" in table and "table/comparison.png" in table
