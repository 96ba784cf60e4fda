"""The sweep's saved view (tracking.views, tracking.runs.publish_sweep_view) and the grids as MLflow image charts
(sweeps.grid_images), against a real MLflow store. The rendered UI is checked in tests/test_browser_glance.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from sweeps.grid_images import GRID_KEY, GridImages, image_file_stem, parse_image_name, write_image_files
from tracking import (LABEL_TAG, PARENT_RUN_TAG, ROLE_PARENT, ROLE_TAG, mlflow_client, publish_sweep_view, run_color,
                      view_url)
from tracking.views import MAX_VIEW_TAG, PALETTE, VIEW_TAG_PREFIX, view_key, view_state, view_tag


def test_view_state_charts_every_metric_with_every_trial_grouped_by_label():
    state = view_state(["eval/clip_score", "eval/fid"], ["method", "prompt"], title="s: at a glance", trials=1000)
    charts = state["compareRunCharts"]
    bars = [c for c in charts if c["type"] == "BAR"]
    assert [c["metricKey"] for c in bars] == ["eval/clip_score", "eval/fid"]          # in the given order
    assert all(c["runsCountToCompare"] == 1000 for c in charts)                        # every trial, not the first 10
    (image,) = [c for c in charts if c["type"] == "IMAGE"]
    assert image["imageKeys"] == [GRID_KEY]
    (par,) = [c for c in charts if c["type"] == "PARALLEL"]
    assert par["selectedParams"] == ["method", "prompt"] and par["selectedMetrics"] == ["eval/clip_score", "eval/fid"]
    assert {c["metricSectionId"] for c in charts} == {s["uuid"] for s in state["compareRunSections"]}
    assert state["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": LABEL_TAG}]
    assert state["useGroupedValuesInCharts"] is False and state["runsHiddenMode"] == "SHOW_ALL"


def test_view_without_axes_has_no_parallel_chart():
    kinds = [c["type"] for c in view_state(["eval/a"], [], title="t")["compareRunCharts"]]
    assert kinds == ["BAR", "IMAGE"]
    kinds = [c["type"] for c in view_state(["eval/a", "eval/b", "eval/c"], ["m"], title="t")["compareRunCharts"]]
    assert kinds == ["BAR", "BAR", "IMAGE", "BAR", "PARALLEL"]      # the grids in the first row of the view


def test_view_tag_is_the_ui_envelope_and_refuses_more_than_mlflow_keeps():
    state = view_state(["eval/a"], ["method"], title="t")
    envelope = json.loads(view_tag("sweep at a glance", state, now_ms=123))
    assert envelope["name"] == "sweep at a glance" and envelope["createdAt"] == 123
    assert json.loads(envelope["state"]) == state
    huge = view_state([f"eval/metric_{i:04d}" for i in range(400)], ["method"], title="t")
    with pytest.raises(ValueError, match="fewer metrics"):
        view_tag("x", huge)


def test_view_size_does_not_grow_with_the_number_of_trials():
    """Bounded at 1,000 trials x 10 metrics: the view names metrics and axes, never trials."""
    metrics = [f"eval/m{i}" for i in range(10)]
    small = view_tag("v", view_state(metrics, ["method", "prompt", "seed"], title="t", trials=6), now_ms=1)
    large = view_tag("v", view_state(metrics, ["method", "prompt", "seed"], title="t", trials=1000), now_ms=1)
    assert abs(len(large) - len(small)) <= 60 and len(large) < MAX_VIEW_TAG


def test_view_url_opens_the_saved_view_without_search_parameters():
    url = view_url("http://127.0.0.1:5000/", "7", view_key("pocket demo/v2"))
    assert url.startswith("http://127.0.0.1:5000/#/experiments/7/runs?viewStateShareKey=glance-pocket-demo-v2")
    assert "searchFilter" not in url and "orderByKey" not in url   # the UI ignores a view when these are present


def test_run_colours_differ_between_neighbouring_trials():
    colours = [run_color(i) for i in range(len(PALETTE))]
    assert len(set(colours)) == len(PALETTE)
    assert run_color("trial_003") == run_color("trial_003")


def _store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow_client(uri)
    exp = client.create_experiment("sweep-x", artifact_location=(tmp_path / "artifacts").as_uri())
    return uri, client, exp


def test_publish_sweep_view_saves_the_view_and_leaves_the_parent_without_trial_metrics(tmp_path):
    from mlflow.entities import Metric

    uri, client, exp = _store(tmp_path)
    parent = client.create_run(exp, run_name="sweep-x", tags={ROLE_TAG: ROLE_PARENT, "sweep.name": "sweep-x"})
    pid = parent.info.run_id
    for i in range(30):
        child = client.create_run(exp, run_name=f"fusion-p-s{i}", tags={PARENT_RUN_TAG: pid, LABEL_TAG: f"fusion-p-s{i}"})
        client.log_batch(child.info.run_id, metrics=[Metric("eval/clip_score", i, 0, 150), Metric("eval/x/detail", 1, 0, 150),
                                                     Metric("loss/sds", 0.1, 0, 10)])
    exp_id, key, metrics = publish_sweep_view(uri, pid, lambda keys: sorted(k for k in keys if k.startswith("eval/")
                                                                            and k.count("/") == 1),
                                              axes=["method", "prompt"])
    assert (exp_id, key, metrics) == (exp, "glance-sweep-x", ["eval/clip_score"])
    envelope = json.loads(client.get_experiment(exp).tags[VIEW_TAG_PREFIX + key])
    state = json.loads(envelope["state"])
    assert [c["metricKey"] for c in state["compareRunCharts"] if c["type"] == "BAR"] == ["eval/clip_score"]
    assert state["searchFilter"] == f"tags.`mlflow.parentRunId` = '{pid}'"   # this launch's trials only
    found = client.search_runs([exp], state["searchFilter"])                   # the filter is valid MLflow syntax
    assert len(found) == 30
    assert client.get_run(pid).data.metrics == {}          # nothing per trial on the parent run


def test_grid_file_names_are_the_ones_mlflow_log_image_writes(tmp_path):
    """MLflow's own log_image(key=, step=) and ours name the files alike (the UI parses these names)."""
    uri, client, exp = _store(tmp_path)
    run = client.create_run(exp)
    client.log_image(run.info.run_id, Image.new("RGB", (8, 8)), key=GRID_KEY, step=3)
    names = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert sorted(parse_image_name(n) for n in names if parse_image_name(n)) == [(GRID_KEY, 3)]
    ours = image_file_stem(GRID_KEY, 3, 1700000000000, "0e8f0a4c-5a59-4d5c-9a53-1f0f6f3e8b11")
    theirs = next(Path(n).stem for n in names if parse_image_name(n))
    assert ours.split("+timestamp+")[0] == theirs.split("+timestamp+")[0] == "samples~grid+step+3"
    assert {Path(n).suffix for n in names} == {".png", ".webp"}
    with pytest.raises(ValueError, match="MLflow allows"):
        image_file_stem("samples:grid", 0, 0, "u")


class FakeTracker:
    run_id = "run-1"

    def __init__(self, held=()):
        self.artifacts, self.tags, self.held = [], [], list(held)

    def log_artifact(self, path, artifact_path=None):
        self.artifacts.append((Path(path), artifact_path))

    def set_tags(self, tags):
        self.tags.append(tags)

    def flush(self, timeout=30.0):
        return True

    def client(self):
        tracker = self

        class Client:
            def list_artifacts(self, run_id, path):
                return [type("A", (), {"path": f"images/{n}"}) for n in tracker.held]
        return Client()


def _grid(path: Path) -> Path:
    Image.new("RGB", (74, 38), "red").save(path)
    return path


def test_grid_images_logs_each_grid_once_as_a_keyed_image(tmp_path):
    tracker = FakeTracker()
    cb = GridImages(tracker, tmp_path / "images")
    cb.on_samples(50, _grid(tmp_path / "step_000050.png"))
    cb.on_samples(150, _grid(tmp_path / "final.png"))
    cb.on_samples(150, tmp_path / "multiview.gif")                    # EG3D's extra artifact: not a grid
    logged = sorted(parse_image_name(p.name) for p, _ in tracker.artifacts if parse_image_name(p.name))
    assert logged == [(GRID_KEY, 50), (GRID_KEY, 150)]
    assert {a for _, a in tracker.artifacts} == {"images"} and len(tracker.artifacts) == 4   # png + webp preview
    assert tracker.tags == [{"mlflow.loggedImages": "True"}]
    preview = next(p for p, _ in tracker.artifacts if p.suffix == ".webp")
    with Image.open(preview) as im:
        assert im.size == (74 * 6, 38 * 6)                              # nearest-neighbour upscale, pixels kept


def test_an_unreadable_grid_costs_its_chart_frame_not_the_trial(tmp_path, caplog):
    tracker = FakeTracker()
    cb = GridImages(tracker, tmp_path / "images")
    broken = tmp_path / "step_000010.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    cb.on_samples(10, broken)                                          # no exception
    cb.on_samples(20, _grid(tmp_path / "step_000020.png"))
    assert [parse_image_name(p.name) for p, _ in tracker.artifacts if p.suffix == ".png"] == [(GRID_KEY, 20)]
    assert "not a readable image" in caplog.text and "step 10" in caplog.text


def test_grid_images_of_a_continued_run_are_not_logged_twice(tmp_path):
    held = [write_image_files(_grid(tmp_path / "step_000050.png"), tmp_path / "old", GRID_KEY, 50)[0].name]
    tracker = FakeTracker(held)
    cb = GridImages(tracker, tmp_path / "images", continues_run=True)
    cb.on_samples(50, _grid(tmp_path / "step_000050.png"))             # replayed after a restart: MLflow has it
    cb.on_samples(100, _grid(tmp_path / "step_000100.png"))
    logged = [parse_image_name(p.name) for p, _ in tracker.artifacts if parse_image_name(p.name)]
    assert logged == [(GRID_KEY, 100)]
