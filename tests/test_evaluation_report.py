"""The sweep report (evaluation.report): its parts, and the whole file built from a real MLflow store. That it
renders in a browser without console errors is tests/test_browser_glance.py."""
from __future__ import annotations

import base64
import io
import re

import pytest
import torch
from PIL import Image

from evaluation.__main__ import main as evaluation_main
from evaluation.report import (REPORT_ARTIFACT, _grid_rows, build_report, ordered_headlines, pareto_front,
                               swept_axes)
from tracking import PARENT_RUN_TAG, ROLE_PARENT, ROLE_TAG, mlflow_client
from trainables.adaptation.grids import save_rows


def test_pareto_front_keeps_the_points_nothing_dominates():
    pts = [(0.9, 70.0), (0.95, 55.0), (0.97, 56.0), (1.0, 16.0), (0.94, 36.0), (0.8, 10.0)]
    assert pareto_front(pts, "max", "max") == [0, 2, 3]
    # lower-is-better x (FID): the low-FID, high-score points
    assert pareto_front([(10.0, 50.0), (20.0, 60.0), (30.0, 55.0)], "min", "max") == [0, 1]
    assert pareto_front([(1.0, 1.0), (1.0, 1.0)], "max", "max") == [0, 1]          # ties dominate nothing


def test_swept_axes_are_the_params_that_differ_between_trials():
    rows = [{"method": "nada", "prompt": "a", "seed": "0", "name": "trial_000", "eval.num_samples": "8", "lr": "1"},
            {"method": "fusion", "prompt": "a", "seed": "1", "name": "trial_001", "eval.num_samples": "16", "lr": "1"}]
    assert swept_axes(rows) == ["method", "seed"]


def test_headlines_read_prompt_score_first():
    keys = {"eval/pocket/preservation", "eval/clip_score", "eval/pocket/prompt_accuracy", "eval/zzz",
            "eval/clip_score/pocket-clip-model"}
    order = ordered_headlines(keys)
    assert order[:3] == ["eval/clip_score", "eval/pocket/prompt_accuracy", "eval/pocket/preservation"]
    assert "eval/clip_score/pocket-clip-model" not in order        # a breakdown, not a headline


def test_grid_rows_split_the_frozen_row_from_the_adapted_one(tmp_path):
    frozen = torch.full((3, 3, 4, 4), -1.0)          # black
    adapted = torch.full((3, 3, 4, 4), 1.0)          # white
    path = save_rows([frozen, adapted], tmp_path / "final.png")
    top, bottom = _grid_rows(path)
    assert top.size == bottom.size == (3 * 6 + 2, 4)
    assert top.getpixel((3, 1)) == (0, 0, 0) and bottom.getpixel((3, 1)) == (255, 255, 255)


@pytest.fixture
def sweep_store(tmp_path):
    """A finished sweep in a real MLflow store: a parent run, 4 trials (2 methods x 2 seeds) with eval metrics,
    step metrics and a final sample grid."""
    from mlflow.entities import Metric, Param

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow_client(uri)
    exp = client.create_experiment("rep", artifact_location=(tmp_path / "artifacts").as_uri())
    pid = client.create_run(exp, run_name="rep", tags={ROLE_TAG: ROLE_PARENT, "sweep.name": "rep"}).info.run_id
    values = {("nada", 0): (30.0, 0.95), ("nada", 1): (34.0, 0.88), ("fusion", 0): (60.0, 0.90), ("fusion", 1): (64.0, 0.86)}
    for (method, seed), (score, keep) in values.items():
        run = client.create_run(exp, run_name=f"{method}-a-red-circle-s{seed}", tags={PARENT_RUN_TAG: pid})
        rid = run.info.run_id
        client.log_batch(rid, params=[Param(k, v) for k, v in {
            "method": method, "prompt": "a red circle", "seed": str(seed), "source_prompt": "a circle",
            "generator.checkpoint": "pocket-circles-32.pt", "name": f"trial_{seed}{method}", "guidance.variant": "sds",
        }.items()], metrics=[Metric("eval/clip_score", score, 0, 20), Metric("eval/pocket/preservation", keep, 0, 20)]
            + [Metric("loss/sds_mse", 1.0 / (s + 1), 0, s) for s in range(1, 21)])
        grid = save_rows([torch.zeros(4, 3, 8, 8), torch.full((4, 3, 8, 8), 0.5 if method == "fusion" else -0.5)],
                         tmp_path / rid / "final.png")
        client.log_artifact(rid, str(grid), "samples")
    return uri, client, pid


def _images(html: str) -> list[Image.Image]:
    out = []
    for data in re.findall(r"src='data:image/png;base64,([^']+)'", html):
        out.append(Image.open(io.BytesIO(base64.b64decode(data))))
    return out


def test_report_is_one_self_contained_file_with_every_section(sweep_store):
    uri, client, pid = sweep_store
    html = build_report("rep", uri)
    assert re.findall(r"<h2>([^<]+)</h2>", html) == ["Table", "Comparison grids", "Headline metrics against the swept axes",
                                                     "Trade-off", "Training curves"]
    assert "http://" not in html and "https://" not in html and "<script" not in html   # nothing to fetch, nothing to run
    images = _images(html)
    assert len(images) == 4 and all(im.width > 100 and im.height > 100 for im in images)   # grid, axes, trade-off, curves
    # the table: one row per method (seeds aggregated), mean ± the seed spread, the better method's mean in bold
    table = html[html.index("<table"):html.index("</table>")]
    assert table.count("<tr>") == 3                      # header + NADA + Fusion
    assert "62.00 ± 2.83" in table and "32.00 ± 2.83" in table
    assert re.search(r"class='num best'>62\.00 ± 2\.83<", table)
    assert "swept axes: method, seed" in html
    assert "Pareto front (3 of 4 trials)" in html        # nada-s1 (34, 0.88) is beaten by fusion-s0 (60, 0.90)
    assert images[0].height > 4 * images[0].width // 10   # the grid figure: the frozen row + one row per trial


def test_report_cli_writes_the_file_and_logs_it_on_the_sweep_run(sweep_store, tmp_path, capsys):
    uri, client, pid = sweep_store
    out = tmp_path / "r.html"
    assert evaluation_main(["report", "--experiment", "rep", "--tracking-uri", uri, "--out", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert REPORT_ARTIFACT in [a.path for a in client.list_artifacts(pid)]
    assert evaluation_main(["report", "--experiment", "nope", "--tracking-uri", uri, "--no-log"]) == 2
    assert "no MLflow experiment named 'nope'" in capsys.readouterr().err
