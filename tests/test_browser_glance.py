"""Results at a glance, checked in a real browser: a real pocket sweep (2 trials, local Ray, the lean MLflow server),
then Debian's Chromium (headless, DevTools protocol) on the MLflow UI and on the sweep report.

- the saved view the sweep printed: every trial's name in the chart view without expanding anything, one bar chart
  per headline metric, the trials' sample grids as an image chart;
- the report: opened from disk (file://), its table and every figure rendered, no console error.

A missing Chromium FAILS with the install command (`apt-get install -y chromium`; `make setup` and .ci/run install
it): a skipped browser check would pass silently.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sweeps.launcher import run_sweep
from tracking import LocalMlflowServer, mlflow_client, view_url
from tracking.browser import QUIET_MLFLOW_UI, Browser, BrowserMissingError, find_chromium
from tracking.views import view_key

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "pocket" / "models"
NAME = "glance-check"
TRIALS = ("nada-a-red-circle-s0", "fusion-a-red-circle-s0")


def _sweep_file(tmp: Path) -> Path:
    clip = [{"name": str(MODELS / "clip" / "pocket-clip.json"),
             "pretrained": str(MODELS / "clip" / "open_clip_model.safetensors")}]
    spec = {
        "name": NAME,
        "base": {
            "method": "fusion", "prompt": "a red circle", "source_prompt": "a circle", "seed": 0,
            "generator": {"checkpoint": str(MODELS / "stylegan2" / "pocket-circles-32.pt")},
            "guidance": {"model": str(MODELS / "sd"), "text_encoder": None, "cfg_scale": 7.5, "t_min": 20,
                         "t_max": 500, "image_size": 32, "precision": "fp32"},
            "nada": {"clip_models": clip, "templates": "none"},
            "train": {"iterations": 8, "batch_size": 2, "sample_every": 4, "sample_count": 4,
                      "sample_truncation": 1.0, "device": "cpu", "threads": 1},
        },
        "zip": [{"method": ["nada", "fusion"], "optim.lr": [0.005, 0.0005]}],
        "resources": {"cpu": 1, "gpu": 0},
        "max_concurrent_trials": 2,
        "evaluation": {
            "num_samples": 16, "truncation": 1.0, "batch_size": 16, "image_size": None, "device": "cpu",
            "progress": False, "cache_dir": str(tmp / "eval_cache"),
            "fid": {"enabled": False, "feature_extractor": "pocket.metrics:judge_features", "custom_resize": "native"},
            "clip": {"models": clip},
            "diversity": {"lpips": {"enabled": False}, "feature": {"enabled": True}},
            "extra_metrics": ["pocket.metrics:prompt_accuracy", "pocket.metrics:attribute_preservation"],
        },
    }
    path = tmp / "glance.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """(tmp dir, exit code, printed output) of the sweep; ./mlruns of that dir holds its runs."""
    find_chromium()        # before minutes of training: a missing browser fails at once, with the install command
    tmp = tmp_path_factory.mktemp("glance")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        import io

        out = io.StringIO()
        rc = run_sweep(_sweep_file(tmp), storage=str(tmp / "runs"), out=out)
    return tmp, rc, out.getvalue()


@pytest.fixture(scope="module")
def ui(finished_sweep):
    tmp, _, _ = finished_sweep
    server = LocalMlflowServer(tmp / "mlruns", log_path=tmp / "ui.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_chart_view_shows_every_trial_and_the_grids_without_expanding(finished_sweep, ui):
    tmp, rc, printed = finished_sweep
    assert rc == 0, printed
    client = mlflow_client(ui.url)
    exp = client.get_experiment_by_name(NAME)
    state = json.loads(json.loads(exp.tags[f"mlflow.sharedViewState.{view_key(NAME)}"])["state"])
    bars = [c["metricKey"] for c in state["compareRunCharts"] if c["type"] == "BAR"]
    assert "eval/clip_score" in bars and "eval/pocket/prompt_accuracy" in bars
    with Browser() as b:
        b.open(view_url(ui.url, exp.experiment_id, view_key(NAME)), local_storage=QUIET_MLFLOW_UI)
        # every trial by name, no click: the view groups the trials by their label, so none hides under its parent;
        # each name in its group row, its run row and the legends of the first charts (> 3 times)
        b.wait_for(" && ".join(f"document.body.innerText.split({json.dumps(t)}).length > 4" for t in TRIALS), 90)
        text = b.text()
        assert f"{NAME}: results at a glance" in text
        for key in bars[:2]:     # the first row of charts at 1600x1100 (the UI renders cards as they scroll in)
            assert key in text
        assert "Error loading shared view state" not in text
        # the image chart: the trials' grids, fetched from the runs' images/ folder
        b.wait_for("[...document.images].filter(i => i.src.includes('images') && i.src.includes('samples~grid')"
                   " && i.complete && i.naturalWidth > 0).length >= 2", 90)
        # the Assistant panel stays closed in a profile that has seen it (docs/evaluation.md: no server setting)
        assert b.evaluate("document.querySelector('[placeholder=\"Ask a question...\"]') === null")


@pytest.mark.slow
def test_sweep_report_opens_offline_with_table_and_figures(finished_sweep):
    tmp, rc, printed = finished_sweep
    report = tmp / "runs" / NAME / "report.html"
    assert rc == 0 and report.is_file(), printed
    assert f"sweep report: {report}" in printed
    with Browser() as b:
        b.open(report.as_uri())
        b.wait_for("document.images.length >= 4 && [...document.images].every(i => i.complete && i.naturalWidth > 0)", 30)
        rows = b.evaluate("document.querySelectorAll('table.results tbody tr').length")
        cells = b.evaluate("[...document.querySelectorAll('table.results th')].map(e => e.innerText)")
        figures = b.evaluate("[...document.querySelectorAll('figure img')].map(i => [i.naturalWidth, i.naturalHeight])")
        b.settle(0.5)
        assert b.errors == []
    assert rows == 2 and "Method" in cells
    assert len(figures) >= 4 and all(w > 100 and h > 100 for w, h in figures)


def test_a_missing_chromium_fails_with_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))           # nothing on PATH
    monkeypatch.delenv("CHROMIUM", raising=False)
    with pytest.raises(BrowserMissingError, match=r"apt-get install -y chromium"):
        find_chromium()
