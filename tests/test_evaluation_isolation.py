"""Metric isolation: a failing metric is recorded on the run (tag + traceback artifact), shown as missing with its
reason in the table and the pocket summary, never drops the other metrics, and `run --only-missing` fills it in
later (and clears its error tag). Real sqlite MLflow store; the tiny models of tests/test_evaluation_run.py.

The slow end-to-end test runs a real pocket sweep (Ray Tune, MLflow server, pocket models) whose prompt the
pocket metric plugins cannot score, with the preflight skipped: the trial still FINISHES with the other
evaluation metrics logged.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from test_evaluation_run import _tiny_generator, _trial_run, world  # noqa: E402,F401 (fixture)

REPO = Path(__file__).resolve().parents[1]
FLAKY_PATH = "test_evaluation_isolation:flaky_plugin"
FLAKY = {"fail": True}
FLAKY_MESSAGE = "flaky plugin is down (test)"


def flaky_plugin(ctx) -> dict[str, float]:
    """An extra_metrics plugin that raises while FLAKY['fail'] is set, else reports the sample count."""
    if FLAKY["fail"]:
        raise RuntimeError(FLAKY_MESSAGE)
    from evaluation.sampling import list_images

    return {"test/flaky": float(len(list_images(ctx.samples_dir)))}


def broken_features(device="cpu"):
    """A fid.feature_extractor factory that cannot build its network."""
    raise OSError("feature weights unreadable (test)")


@pytest.fixture()
def store(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("iso", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp_id, tags={"sweep.role": "parent"}).info.run_id
    return uri, client, exp_id, parent


def _download_text(client, run_id: str, path: str, dst: Path) -> str:
    import mlflow.artifacts

    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst),
                                                tracking_uri=client.tracking_uri)
    return Path(local).read_text()


def test_failing_plugin_is_recorded_shown_and_filled_later(world, store, tmp_path, capsys):
    from evaluation.__main__ import main
    from evaluation.fid import import_object
    from evaluation.table import render, table_dataframe
    from evaluation.runner import evaluate_run
    from pocket import summary

    uri, client, exp_id, parent = store
    assert import_object(FLAKY_PATH) is flaky_plugin, "the plugin must resolve to this module (FLAKY switch)"
    cfg = world["cfg"].model_copy(update={"output_dir": str(tmp_path / "evals"),
                                          "extra_metrics": ["evaluation.testing:brightness_plugin", FLAKY_PATH]})
    rid = _trial_run(client, exp_id, parent, world["adapted"], "a red thing", world["src"])
    FLAKY["fail"] = True
    metrics = evaluate_run(rid, None, cfg, uri)   # must not raise

    # the other metrics are computed and logged
    others = {"eval/fid", "eval/kid", "eval/clip_score", "eval/lpips_diversity", "eval/feature_diversity",
              "eval/test/brightness", "eval/test/source_change"}
    run = client.get_run(rid)
    assert others <= set(metrics) and others <= set(run.data.metrics)
    assert "eval/test/flaky" not in run.data.metrics
    # the failure: one-line reason as a tag, full traceback as an artifact, not marked done
    reason = f"RuntimeError: {FLAKY_MESSAGE}"
    assert set(metrics.errors) == {FLAKY_PATH}
    assert run.data.tags["eval.error.test_evaluation_isolation.flaky_plugin"] == reason
    assert run.data.tags["eval.extra_metrics_done"] == "evaluation.testing:brightness_plugin"
    text = _download_text(client, rid, "eval/errors/test_evaluation_isolation.flaky_plugin.txt", tmp_path / "dl")
    assert "Traceback (most recent call last)" in text and "in flaky_plugin" in text and FLAKY_MESSAGE in text

    # the table shows it missing with its reason (and keeps every other column)
    df = table_dataframe("iso", uri)
    assert df.loc[0, "missing"] == [("test_evaluation_isolation.flaky_plugin", 1, reason)]
    md = render(df, "md")
    assert md.splitlines()[0].endswith("| Missing |")
    assert "test_evaluation_isolation.flaky_plugin (1/1)" in md.splitlines()[2]
    assert f"- test_evaluation_isolation.flaky_plugin: {reason}" in md
    assert f"test_evaluation_isolation.flaky_plugin (1/1): {reason}" in render(df, "csv")
    # ... and so does the pocket summary (prompts outside the catalogue are kind 'other')
    text = summary.summary("iso", uri, with_frozen=False)
    assert f"- test_evaluation_isolation.flaky_plugin missing in 1 run(s): {reason}" in text
    assert "| other (1) |" in text

    # the plugin works again: --only-missing computes exactly the missing metric and clears the error tag
    fid_before = client.get_metric_history(rid, "eval/fid")
    FLAKY["fail"] = False
    cfg_file = tmp_path / "eval.json"
    cfg_file.write_text(cfg.model_dump_json())
    args = ["run", "--experiment", "iso", "--tracking-uri", uri, "--only-missing", "--config", str(cfg_file)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"(missing: {FLAKY_PATH})" in out
    run = client.get_run(rid)
    assert run.data.metrics["eval/test/flaky"] == float(cfg.num_samples)
    assert "eval.error.test_evaluation_isolation.flaky_plugin" not in run.data.tags
    assert set(run.data.tags["eval.extra_metrics_done"].split(",")) == set(cfg.extra_metrics)
    assert client.get_metric_history(rid, "eval/fid") == fid_before        # not recomputed
    assert len(client.get_metric_history(rid, "eval/test/brightness")) == 1
    assert not any(table_dataframe("iso", uri)["missing"]) and "Missing" not in render(table_dataframe("iso", uri), "md")
    assert main(args) == 0 and "already evaluated" in capsys.readouterr().out


def test_core_metric_failures_are_isolated_and_no_samples_fails_every_metric(world, store, tmp_path, capsys):
    from evaluation.__main__ import main
    from evaluation.runner import evaluate_generator, evaluate_run, metric_units

    FLAKY["fail"] = False
    base = world["cfg"].model_copy(update={"extra_metrics": [FLAKY_PATH]})
    # the feature extractor fails: FID and feature diversity (its users) fail with one reason, the rest run
    cfg = base.model_validate(base.model_dump() | {
        "fid": base.fid.model_dump() | {"feature_extractor": "test_evaluation_isolation:broken_features"},
        "diversity": {"lpips": base.diversity.lpips.model_dump() | {"backbone_path": str(tmp_path / "no.pth")},
                      "feature": base.diversity.feature.model_dump()}})
    metrics, manifest = evaluate_generator(world["adapted"], "a red thing", cfg, tmp_path / "e1")
    assert manifest["count"] == cfg.num_samples
    assert set(metrics.errors) == {"fid", "feature_diversity", "lpips_diversity", "preservation"}
    assert metrics.errors["fid"].reason == metrics.errors["feature_diversity"].reason \
        == "OSError: feature weights unreadable (test)"
    assert metrics.errors["lpips_diversity"].reason.startswith("LpipsWeightsMissingError: LPIPS (alex)")
    assert str(tmp_path / "no.pth") in metrics.errors["lpips_diversity"].reason
    assert metrics.errors["preservation"].reason.startswith("ValueError: no source generator known")   # none given
    assert {"eval/clip_score", "eval/test/flaky"} <= set(metrics) and not any("fid" in k for k in metrics)
    assert metrics.done == ["clip_score", FLAKY_PATH]

    # no samples (an unreadable generator): every metric is recorded as failed, nothing raises, no params
    uri, client, exp_id, parent = store
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    rid = _trial_run(client, exp_id, parent, bad, "a red thing", world["src"])
    metrics = evaluate_run(rid, None, base.model_copy(update={"output_dir": str(tmp_path / "e2")}), uri)
    assert dict(metrics) == {} and set(metrics.errors) == set(metric_units(base))
    tags = client.get_run(rid).data.tags
    for slug in ("fid", "feature_diversity", "clip_score", "lpips_diversity", "test_evaluation_isolation.flaky_plugin"):
        assert tags[f"eval.error.{slug}"].startswith("evaluation failed: "), slug
    assert not any(k.startswith("eval.") for k in client.get_run(rid).data.params)
    # the CLI reports the failures and exits 1 (the run is recorded, the command goes on)
    cfg_file = tmp_path / "eval.json"
    cfg_file.write_text(base.model_copy(update={"output_dir": str(tmp_path / "e3")}).model_dump_json())
    assert main(["run", "--experiment", "iso", "--tracking-uri", uri, "--config", str(cfg_file)]) == 1
    assert "metric clip_score FAILED" in capsys.readouterr().out


def _pocket_sweep(tmp: Path, prompt: str) -> Path:
    clip = {"name": str(REPO / "pocket/models/clip/pocket-clip.json"),
            "pretrained": str(REPO / "pocket/models/clip/open_clip_model.safetensors")}
    spec = {
        "name": "iso-e2e",
        "base": {"method": "nada", "prompt": prompt, "source_prompt": "a circle",
                 "generator": {"checkpoint": str(REPO / "pocket/models/stylegan2/pocket-circles-32.pt")},
                 "guidance": {"model": str(REPO / "pocket/models/sd"), "text_encoder": None, "image_size": 32},
                 "nada": {"clip_models": [clip], "templates": "none"},
                 "train": {"iterations": 2, "batch_size": 1, "sample_every": 0, "sample_count": 2,
                           "sample_truncation": 1.0, "device": "cpu", "threads": 1}},
        "resources": {"cpu": 1},
        "storage_path": str(tmp / "storage"),
        "evaluation": {"num_samples": 16, "truncation": 1.0, "batch_size": 16, "image_size": None, "device": "cpu",
                       "progress": False, "output_dir": str(tmp / "evals"),
                       "fid": {"enabled": False, "feature_extractor": "pocket.metrics:judge_features"},
                       "clip": {"models": [clip]},
                       "diversity": {"lpips": {"enabled": False}, "feature": {"enabled": True}},
                       "extra_metrics": ["pocket.metrics:prompt_accuracy", "pocket.metrics:attribute_preservation"]},
    }
    path = tmp / "iso.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.slow
def test_pocket_sweep_trial_finishes_with_other_metrics_when_a_plugin_fails(tmp_path):
    from mlflow.tracking import MlflowClient

    prompt = "a purple giraffe"   # 'giraffe' is no pocket word: the pocket plugins cannot score it
    path = _pocket_sweep(tmp_path, prompt)
    env = dict(os.environ, HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0", MLFLOW_DISABLE_TELEMETRY="true",
               PYTHONPATH=str(REPO), RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    # the preflight would refuse this sweep (tests/test_preflight_eval.py); skip it to reach evaluation
    proc = subprocess.run([sys.executable, "-m", "sweeps", "run", str(path), "--skip-model-check"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("iso-e2e")
    trials = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("sweep.role") == "trial"]
    assert len(trials) == 1
    run = trials[0]
    assert run.info.status == "FINISHED" and run.data.tags.get("sweep.status") == "finished"
    assert {"eval/clip_score", "eval/feature_diversity"} <= set(run.data.metrics)
    for slug in ("pocket.metrics.prompt_accuracy", "pocket.metrics.attribute_preservation"):
        reason = run.data.tags[f"eval.error.{slug}"]
        assert reason.startswith("ValueError: pocket metrics score only prompts written in the pocket world's")
        assert repr(prompt) in reason
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "eval/errors")}
    assert arts == {"eval/errors/pocket.metrics.prompt_accuracy.txt",
                    "eval/errors/pocket.metrics.attribute_preservation.txt"}
