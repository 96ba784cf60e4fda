"""Multi-objective search: the schema, the Optuna searcher it builds, the Pareto front and the pick rules, and
what is logged on a real MLflow store (sweeps/pareto.py)."""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pandas as pd
import pytest

from evaluation.pareto import pareto_mask
from sweeps.pareto import choose, log_search_result
from sweeps.spec import SweepError, load_sweep
from sweeps.tuner import param_space, tune_config
from tracking import PICK_RUN_TAG, PICK_TAG, PICKED_TAG

EVAL = "evaluation: {num_samples: 8, fid: {enabled: false}}"
PARAMS = "params: {optim.lr: {dist: loguniform, low: 0.001, high: 0.01}}"


def _sweep(tmp_path, search: str, evaluation: str = EVAL):
    ckpt = tmp_path / "g.pt"
    ckpt.write_bytes(b"x")
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(f"""
        name: s
        base: {{prompt: a dog, generator: {{checkpoint: {ckpt}}}, train: {{iterations: 300}}}}
        search: {search}
        {evaluation}
        """))
    return load_sweep(path)


def _front_by_sweep(x: np.ndarray, y: np.ndarray) -> set[int]:
    """Independent 2-D front (both maximised): sort by x descending (ties: y descending), keep a point when its
    y beats every y seen before it."""
    order = sorted(range(len(x)), key=lambda i: (-x[i], -y[i]))
    best, keep = -np.inf, set()
    for i in order:
        if y[i] > best:
            keep.add(i)
            best = y[i]
    return keep


def test_pareto_mask_equals_a_sweep_line_front():
    rng = np.random.default_rng(0)
    for trial in range(20):
        v = rng.normal(size=(25, 2))
        got = set(np.flatnonzero(pareto_mask(v, ["max", "max"])))
        assert got == _front_by_sweep(v[:, 0], v[:, 1]), trial
        # minimising the second objective is maximising its negative
        got_min = set(np.flatnonzero(pareto_mask(v, ["max", "min"])))
        assert got_min == _front_by_sweep(v[:, 0], -v[:, 1])


def test_pick_rules_on_a_hand_computed_example(tmp_path):
    # clip (max) vs preservation (max): a and d are dominated by c; b, c, e form the front
    df = pd.DataFrame({"trial": list("abcde"),
                       "eval/clip_score": [20.0, 30.0, 25.0, 22.0, 18.0],
                       "eval/preservation/clip": [0.70, 0.60, 0.80, 0.75, 0.95]})
    knee = _sweep(tmp_path, "{type: optuna, num_samples: 5, objectives: [{metric: eval/clip_score, mode: max}, "
                            "{metric: eval/preservation/clip, mode: max}], pick: {rule: knee}, " + PARAMS + "}")
    front, pick = choose(df, knee.spec.search)
    assert list(df["trial"][front]) == ["b", "c", "e"]
    # normalised over the front: b (1, 0), c (7/12, 4/7), e (0, 1): c is nearest (1, 1)
    assert df["trial"].iloc[pick.index] == "c"

    bound = "pick: {rule: constrained, objective: eval/clip_score, subject_to: {eval/preservation/clip: {min: 0.74}}}"
    cons = _sweep(tmp_path, "{type: optuna, num_samples: 5, objectives: [{metric: eval/clip_score, mode: max}, "
                            "{metric: eval/preservation/clip, mode: max}], " + bound + ", " + PARAMS + "}")
    _, pick = choose(df, cons.spec.search)
    assert df["trial"].iloc[pick.index] == "c" and "3 trial(s)" in pick.note   # c, d, e keep >= 0.74
    strict = df.assign(**{"eval/preservation/clip": [0.5, 0.4, 0.6, 0.55, 0.62]})   # nobody reaches 0.74
    _, pick = choose(strict, cons.spec.search)
    assert df["trial"].iloc[pick.index] == "e" and pick.note.startswith("NO trial")


def test_single_objective_search_with_a_constrained_pick(tmp_path):
    s = _sweep(tmp_path, "{type: optuna, num_samples: 4, metric: eval/clip_score, mode: max, pick: {rule: "
                         "constrained, objective: eval/clip_score, subject_to: {eval/pocket/preservation: {min: 0.8}}}, "
                         + PARAMS + "}")
    assert s.spec.search.metrics() == ["eval/clip_score", "eval/pocket/preservation"]


@pytest.mark.parametrize("search, message", [
    ("{type: optuna, num_samples: 2, metric: eval/clip_score, objectives: [{metric: eval/a, mode: max}, "
     "{metric: eval/b, mode: min}], " + PARAMS + "}", "either `metric`"),
    ("{type: optuna, num_samples: 2, objectives: [{metric: eval/a, mode: max}], " + PARAMS + "}", "at least 2"),
    ("{type: optuna, num_samples: 2, metric: eval/a, mode: max, pick: {rule: knee}, " + PARAMS + "}",
     "needs two or more objectives"),
    ("{type: optuna, num_samples: 2, objectives: [{metric: eval/a, mode: max}, {metric: eval/b, mode: max}], "
     "pick: {rule: constrained, objective: eval/c, subject_to: {eval/a: {min: 1}}}, " + PARAMS + "}",
     "'eval/c' is not one of the search's objectives"),
    ("{type: optuna, num_samples: 2, objectives: [{metric: eval/a, mode: max}, {metric: loss/sds, mode: min}], "
     + PARAMS + "}", "objective 'loss/sds' is not an evaluation metric"),
    ("{type: optuna, num_samples: 2, objectives: [{metric: eval/a, mode: max}, {metric: eval/b, mode: max}], "
     "pick: {rule: constrained, objective: eval/a, subject_to: {eval/b: {}}}, " + PARAMS + "}", "min, max or both"),
])
def test_bad_searches_are_refused_with_file_and_line(tmp_path, search, message):
    with pytest.raises(SweepError, match=r"s\.yaml:\d+") as info:
        _sweep(tmp_path, search)
    assert message in str(info.value)


def test_multi_objective_needs_an_evaluation_block(tmp_path):
    with pytest.raises(SweepError, match="no evaluation block"):
        _sweep(tmp_path, "{type: optuna, num_samples: 2, objectives: [{metric: eval/a, mode: max}, "
                         "{metric: eval/b, mode: min}], " + PARAMS + "}", evaluation="")


def test_multi_objective_searcher_is_a_real_optuna_study_with_both_directions(tmp_path):
    import optuna

    s = _sweep(tmp_path, "{type: optuna, num_samples: 4, sampler: nsga2, objectives: [{metric: eval/clip_score, "
                         "mode: max}, {metric: eval/preservation/clip, mode: max}], " + PARAMS + "}")
    alg = tune_config(s).search_alg
    assert alg.metric == ["eval/clip_score", "eval/preservation/clip"] and alg.mode == ["max", "max"]
    assert alg.set_search_properties(None, None, param_space(s)) or alg._space
    for tid, vals in (("a", (20.0, 0.9)), ("b", (30.0, 0.5))):
        alg.suggest(tid)
        alg.on_trial_result(tid, {"step": 1, "training_iteration": 1})     # no eval/ keys yet: ignored
        alg.on_trial_complete(tid, {"eval/clip_score": vals[0], "eval/preservation/clip": vals[1]})
    study = alg._ot_study
    assert isinstance(study.sampler, optuna.samplers.NSGAIISampler)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MAXIMIZE"]
    assert sorted(t.values for t in study.best_trials) == [[20.0, 0.9], [30.0, 0.5]]


def test_front_and_pick_are_logged_on_the_parent_run(tmp_path):
    from mlflow.tracking import MlflowClient

    from tracking import TrackingTarget

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("s", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp, tags={"sweep.role": "parent"}).info.run_id
    ids = {}
    for name, clip, pres in (("trial_000", 20.0, 0.70), ("trial_001", 30.0, 0.60), ("trial_002", 25.0, 0.80),
                             ("trial_003", 22.0, 0.75)):
        r = client.create_run(exp, run_name=name, tags={"mlflow.parentRunId": parent, "sweep.role": "trial"})
        client.log_param(r.info.run_id, "optim.lr", "0.002")
        client.log_metric(r.info.run_id, "eval/clip_score", clip)
        client.log_metric(r.info.run_id, "eval/preservation/clip", pres)
        client.set_terminated(r.info.run_id, "FINISHED")
        ids[name] = r.info.run_id
    s = _sweep(tmp_path, "{type: optuna, num_samples: 4, objectives: [{metric: eval/clip_score, mode: max}, "
                         "{metric: eval/preservation/clip, mode: max}], pick: {rule: constrained, objective: "
                         "eval/clip_score, subject_to: {eval/preservation/clip: {min: 0.74}}}, " + PARAMS + "}")
    import io
    out = io.StringIO()
    pick = log_search_result(s.spec.search, TrackingTarget(uri, source="test"), "s", parent, out)
    assert pick is not None
    tags = client.get_run(parent).data.tags
    assert tags[PICK_TAG] == "trial_002" and tags[PICK_RUN_TAG] == ids["trial_002"]
    assert client.get_run(ids["trial_002"]).data.tags[PICKED_TAG] == "true"
    assert PICKED_TAG not in client.get_run(ids["trial_001"]).data.tags
    arts = {a.path for a in client.list_artifacts(parent, "search")}
    assert arts == {"search/pareto.csv", "search/pareto.png", "search/pick.json"}
    local = client.download_artifacts(parent, "search", str(tmp_path / "dl"))
    table = pd.read_csv(f"{local}/pareto.csv")
    assert dict(zip(table["trial"], table["on_front"])) == {"trial_000": False, "trial_001": True,
                                                            "trial_002": True, "trial_003": False}
    assert json.loads(open(f"{local}/pick.json").read())["trial"] == "trial_002"
    assert "trial_002" in out.getvalue()
    # the sweep report shows the pick and the front figure (read back from the parent run)
    from evaluation.report import load_sweep_runs, search_section

    section = "\n".join(search_section(load_sweep_runs("s", uri, parent), uri, tmp_path / "rep"))
    assert "picked: <b>trial_002</b>" in section and "data:image/png;base64," in section
    assert "eval/preservation/clip &gt;= 0.74" in section


def test_trials_a_search_cannot_tell_apart_by_name_get_their_tune_names(tmp_path):
    from mlflow.tracking import MlflowClient

    from sweeps.pareto import trial_frame
    from tracking import TrackingTarget

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("s", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp).info.run_id
    for tid in ("trial_a", "trial_b"):
        r = client.create_run(exp, run_name="fusion-a-square-s0", tags={"mlflow.parentRunId": parent,
                                                                         "sweep.trial_name": tid})
        client.log_metric(r.info.run_id, "eval/clip_score", 1.0)
    df = trial_frame(TrackingTarget(uri, source="test"), "s", parent, ["eval/clip_score"])
    assert sorted(df["trial"]) == ["fusion-a-square-s0 (trial_a)", "fusion-a-square-s0 (trial_b)"]


def test_a_search_names_its_trials_by_the_sampled_params(tmp_path):
    from sweeps.context import run_name, search_name_axes

    s = _sweep(tmp_path, "{type: optuna, num_samples: 2, objectives: [{metric: eval/a, mode: max}, {metric: eval/b, "
                         "mode: max}], params: {prompt: {dist: choice, values: [a dog]}, optim.lr: {dist: loguniform, "
                         "low: 0.001, high: 0.01}, guidance.cfg_scale: {dist: uniform, low: 3, high: 30}}}")
    axes = search_name_axes(s.spec.search)
    assert axes == ("optim.lr", "guidance.cfg_scale")
    name = run_name(s.point({"optim.lr": 0.0031, "guidance.cfg_scale": 18.25}), axes)
    assert "lr0.0031" in name and "cfg_scale18.25" in name
