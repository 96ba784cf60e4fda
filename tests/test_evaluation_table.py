"""The comparison table on a synthetic experiment in a real local MLflow store (sqlite in tmp_path):
a parent run + 18 child runs = 3 method variants x 2 prompts x 3 seeds, with known metric values."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from evaluation.table import aggregate, format_latex, format_markdown, table_dataframe, variant_label  # noqa: E402

METHODS = {   # label -> params
    "NADA": {"method": "nada", "reg.lpips.weight": "0.0", "layers.k": "6"},
    "Fusion": {"method": "fusion", "reg.directional.weight": "0.0", "reg.reconstruction.weight": "0.0",
               "reg.lpips.weight": "0.0", "layers.k": "0"},
    "Fusion + LPIPS": {"method": "fusion", "reg.directional.weight": "0.0", "reg.reconstruction.weight": "0.0",
                       "reg.lpips.weight": "1.0", "layers.k": "0"},
}
PROMPTS = ["photo of a dog", "3d pixar face"]
SEEDS = [0, 1, 2]
BASE = {"NADA": (40.0, 30.0, 0.30), "Fusion": (25.0, 29.0, 0.35), "Fusion + LPIPS": (22.0, 28.5, 0.45)}


def _values(label, p, seed):
    fid, clip, lp = BASE[label]
    return {"eval/fid": fid + 3 * p + 1.5 * seed, "eval/clip_score": clip + p + 0.2 * seed,
            "eval/lpips_diversity": lp + 0.01 * seed, "eval/kid": (fid + seed) / 1000}


def test_variant_labels():
    assert variant_label({"method": "nada", "layers.k": "4"}) == "NADA"
    assert variant_label({"method": "fusion"}) == "Fusion"
    assert variant_label({"method": "fusion", "reg.directional.weight": "1.0"}) == "Fusion + directional"
    assert variant_label({"method": "fusion", "reg.reconstruction.weight": "0.5", "reg.lpips.weight": "0.3",
                          "layers.k": "0"}) == "Fusion + reconstruction + LPIPS"
    assert variant_label({"method": "fusion", "layers.k": "6"}) == "Fusion + layer selection k=6"
    assert variant_label({"method": "fusion", "guidance.cfg_scale": "50"}, extra_params=["guidance.cfg_scale"]) \
        == "Fusion (guidance.cfg_scale=50)"
    assert variant_label({}, {"method": "nada"}) == "NADA"
    # score-distillation variants (guidance.variant): sds is the paper's Fusion, the others are named
    assert variant_label({"method": "fusion", "guidance.variant": "sds"}) == "Fusion"
    assert variant_label({"method": "fusion", "guidance.variant": "dds", "reg.reconstruction.weight": "0.1"}) \
        == "Fusion-DDS + reconstruction"
    assert variant_label({"method": "fusion", "guidance.variant": "delta"}) == "Fusion-bridge"
    assert variant_label({"method": "nada", "guidance.variant": "csd"}) == "NADA"   # NADA has no SDS variant


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("pocket-sweep", artifact_location=(tmp / "artifacts").as_uri())
    parent = client.create_run(exp, run_name="sweep", tags={"sweep.role": "parent"}).info.run_id
    strip = tmp / "strip.png"
    for li, label in enumerate(METHODS):
        for p, prompt in enumerate(PROMPTS):
            for seed in SEEDS:
                rid = client.create_run(exp, tags={"mlflow.parentRunId": parent, "sweep.role": "trial"}).info.run_id
                params = dict(METHODS[label], prompt=prompt, seed=str(seed), **{"generator.checkpoint": "/m/afhqcat.pt"})
                client.log_batch(rid, metrics=[Metric(k, v, 0, 0) for k, v in _values(label, p, seed).items()],
                                 params=[Param(k, v) for k, v in params.items()],
                                 tags=[RunTag("method", params["method"])])
                if seed == 0 and p == 0:   # eval/strip.png of the first run of each variant (for the figure)
                    Image.new("RGB", (3 * 128, 128), (80 * li, 100, 200)).save(strip)
                    client.log_artifact(rid, str(strip), "eval")
                client.set_terminated(rid, "FINISHED")
    return uri, parent, client


def test_table_rows_means_stds_counts_best(experiment):
    uri, _, _ = experiment
    df = table_dataframe("pocket-sweep", uri)
    assert len(df) == 6 and set(df["n"]) == {3}
    assert list(df["method"][:3]) == ["NADA", "Fusion", "Fusion + LPIPS"]     # canonical order per group
    for label in METHODS:
        for p, prompt in enumerate(PROMPTS):
            row = df[(df["method"] == label) & (df["prompt"] == prompt)].iloc[0]
            vals = pd.DataFrame([_values(label, p, s) for s in SEEDS])
            for key, name in (("eval/fid", "fid"), ("eval/clip_score", "clip_score"),
                              ("eval/lpips_diversity", "lpips_diversity"), ("eval/kid", "kid")):
                assert row[f"{name}_mean"] == pytest.approx(vals[key].mean())
                assert row[f"{name}_std"] == pytest.approx(np.std(vals[key], ddof=1))
                assert row[f"{name}_n"] == 3
            # best: lowest FID/KID and highest diversity -> Fusion + LPIPS; highest CLIP -> NADA
            assert row["fid_best"] == (label == "Fusion + LPIPS") and row["kid_best"] == (label == "Fusion + LPIPS")
            assert row["lpips_diversity_best"] == (label == "Fusion + LPIPS")
            assert row["clip_score_best"] == (label == "NADA")
    md = format_markdown(df)
    assert "**23.50 ± 1.50**" in md and "| afhqcat | photo of a dog | NADA | 3 |" in md
    assert "**30.20 ± 0.20**" in md      # NADA CLIP, prompt 0
    tex = format_latex(df)
    assert r"\textbf{23.50 $\pm$ 1.50}" in tex and tex.count(r"\midrule") == 2


def test_log_table_to_parent_and_cli(experiment, tmp_path, capsys):
    import mlflow.artifacts

    from evaluation.__main__ import main

    uri, parent, client = experiment
    out = tmp_path / "table.csv"
    assert main(["table", "--experiment", "pocket-sweep", "--tracking-uri", uri, "--format", "csv",
                 "--out", str(out)]) == 0
    csv = pd.read_csv(out)
    assert len(csv) == 6 and {"fid_mean", "fid_std", "fid_best", "n"} <= set(csv.columns)
    names = {a.path for a in client.list_artifacts(parent, "table")}
    assert names == {"table/table.md", "table/table.tex", "table/table.csv", "table/comparison.png"}
    local = mlflow.artifacts.download_artifacts(run_id=parent, artifact_path="table", dst_path=str(tmp_path / "dl"),
                                                tracking_uri=uri)
    fig = Image.open(os.path.join(local, "comparison.png"))
    # 2 groups x 3 variants of 128 px rows + titles/header; 3 latent columns after the label column
    assert fig.height == 20 + 2 * (24 + 3 * 128) and fig.width == 260 + 3 * 128
    md = open(os.path.join(local, "table.md")).read()
    assert sum(line.startswith("| ") for line in md.splitlines()) == 7     # header + 6 rows
    assert aggregate(pd.DataFrame(columns=["source", "prompt", "method"])).empty
