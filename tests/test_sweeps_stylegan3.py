"""sweeps/pocket/sg3.yaml runs: its grid (Fusion with and without layer selection over the 16 W+ entries) on a
16 px random-weight StyleGAN3 and the tiny SD / CLIP models, each trial evaluated, the parent run tabulated
(embedded Ray, local MLflow). Tiny random models: plumbing, not image quality."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import tiny_adapt_dict, tiny_eval_block

pytestmark = pytest.mark.slow
SWEEP = Path(__file__).resolve().parents[1] / "sweeps" / "pocket" / "sg3.yaml"


def test_pocket_sg3_sweep_adapts_evaluates_and_tabulates(tmp_path, tiny_models):
    from trainables.generators.stylegan3 import build_pocket_stylegan3, save_stylegan3

    spec = yaml.safe_load(SWEEP.read_text())
    assert spec["base"]["generator"]["kind"] == "stylegan3" and spec["grid"] == {"layers.k": [0, 4]}
    sg3 = save_stylegan3(build_pocket_stylegan3(seed=0, img_resolution=16), tmp_path / "pocket_sg3.pt")
    base = tiny_adapt_dict(tiny_models, tmp_path / "unused")
    base.update(method=spec["base"]["method"], generator={"kind": "stylegan3", "checkpoint": str(sg3)})
    base["train"].update(iterations=2, sample_every=0, threads=1)
    spec.update(base=base, storage_path=str(tmp_path / "storage"),
                evaluation=tiny_eval_block(tiny_models, tmp_path / "eval_cache"))
    sweep = tmp_path / "sg3.yaml"
    sweep.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, "-m", "sweeps", "run", str(sweep)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(spec["name"])
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
    parent = next(r for r in runs if r.data.tags.get("sweep.role") == "parent")
    assert len(children) == 2
    assert sorted(c.data.params["layers.k"] for c in children) == ["0", "4"]
    for child in children:
        assert child.info.status == "FINISHED" and child.data.params["generator.kind"] == "stylegan3"
        assert "eval/clip_score" in child.data.metrics
        assert "samples/final.png" in {a.path for a in client.list_artifacts(child.info.run_id, "samples")}
    assert "table/table.md" in {a.path for a in client.list_artifacts(parent.info.run_id, "table")}
