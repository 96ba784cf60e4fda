"""Search modes: the Tune param space, scheduler and search algorithm a sweep file produces."""
from __future__ import annotations

import textwrap

import pytest

from sweeps.tuner import param_space, trial_name, tune_config
from sweeps.spec import load_sweep


def _sweep(tmp_path, search: str, axes: str = ""):
    ckpt = tmp_path / "g.pt"
    ckpt.write_bytes(b"x")
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(f"""
        name: s
        base: {{prompt: a dog, generator: {{checkpoint: {ckpt}}}, train: {{iterations: 300}}}}
        {axes}
        search: {search}
        """))
    return load_sweep(path)


def test_grid_space_is_one_grid_search_over_points(tmp_path):
    sweep = _sweep(tmp_path, "{type: grid}", "zip: [{method: [fusion, nada], optim.lr: [0.0008, 0.0016]}]")
    space = param_space(sweep)
    points = space["point"]["grid_search"]
    assert points == [{"index": 0, "overrides": {"method": "fusion", "optim.lr": 0.0008}},
                      {"index": 1, "overrides": {"method": "nada", "optim.lr": 0.0016}}]

    class T:  # the Trial fields trial_name reads
        config = {"point": points[1]}
        trial_id = "abc"
    assert trial_name(T) == "trial_001"


def test_asha_uses_loop_steps_as_time(tmp_path):
    sweep = _sweep(tmp_path, "{type: asha, metric: loss/sds_mse, grace_period: 50}", "grid: {seed: [1, 2, 3]}")
    cfg = tune_config(sweep)
    sched = cfg.scheduler
    assert type(sched).__name__ == "AsyncHyperBandScheduler"
    assert sched._time_attr == "step" and sched._max_t == 300 and sched.metric == "loss/sds_mse"


def test_optuna_space_converts(tmp_path):
    import optuna  # noqa: F401  (a declared dependency: if it is missing the install is broken, so fail, not skip)
    sweep = _sweep(tmp_path, "{type: optuna, num_samples: 4, metric: loss/sds_mse, mode: min, params: "
                             "{guidance.cfg_scale: {dist: loguniform, low: 5, high: 100}, "
                             "reg.lpips.weight: {dist: choice, values: [0.0, 0.3]}}}")
    cfg = tune_config(sweep)
    assert cfg.num_samples == 4
    space = param_space(sweep)
    assert cfg.search_alg.set_search_properties("loss/sds_mse", "min", space)
    suggestion = cfg.search_alg.suggest("t1")
    overrides = suggestion["point"]["overrides"]
    assert 5 <= overrides["guidance.cfg_scale"] <= 100 and overrides["reg.lpips.weight"] in (0.0, 0.3)
    assert sweep.point(overrides).guidance.cfg_scale == overrides["guidance.cfg_scale"]


def test_optuna_param_naming_no_field_is_an_error(tmp_path):
    from sweeps.spec import SweepError

    with pytest.raises(SweepError, match="guidance.cfg_scael' names no AdaptConfig field"):
        _sweep(tmp_path, "{type: optuna, num_samples: 2, metric: m, params: {guidance.cfg_scael: {dist: uniform, low: 1, high: 2}}}")


EVAL_BLOCK = "evaluation: {num_samples: 8, fid: {enabled: false}}"


def test_eval_metric_needs_an_evaluation_block_and_no_asha(tmp_path):
    from sweeps.spec import SweepError

    optuna = "{type: optuna, num_samples: 2, metric: eval/clip_score, mode: max, params: {optim.lr: {dist: loguniform, low: 0.001, high: 0.01}}}"
    with pytest.raises(SweepError, match=r"s.yaml:\d+: search.metric 'eval/clip_score' .* no evaluation block"):
        _sweep(tmp_path, optuna)
    with pytest.raises(SweepError, match=r"s.yaml:\d+: .*ASHA compares trials at every step"):
        _sweep(tmp_path, "{type: asha, metric: eval/clip_score, mode: max}", EVAL_BLOCK)
    assert _sweep(tmp_path, optuna, EVAL_BLOCK).spec.search.metric == "eval/clip_score"


def test_optuna_on_a_final_only_metric_learns_from_the_last_result(tmp_path, monkeypatch):
    """The real Optuna searcher (Ray's wrapper, a real optuna study): per-step results without the eval/ metric
    are skipped, the final result's value is what the study records, and Tune's strict check is off for it."""
    from sweeps.search import STRICT_CHECK_ENV, FinalMetricOptuna

    monkeypatch.delenv(STRICT_CHECK_ENV, raising=False)
    optuna = "{type: optuna, num_samples: 2, metric: eval/clip_score, mode: max, params: {optim.lr: {dist: loguniform, low: 0.001, high: 0.01}}}"
    sweep = _sweep(tmp_path, optuna, EVAL_BLOCK)
    alg = tune_config(sweep).search_alg
    assert isinstance(alg, FinalMetricOptuna) and __import__("os").environ[STRICT_CHECK_ENV] == "1"
    assert alg.set_search_properties("eval/clip_score", "max", param_space(sweep))
    values = {}
    for trial_id, score in (("a", 21.0), ("b", 27.5)):
        lr = alg.suggest(trial_id)["point"]["overrides"]["optim.lr"]
        values[trial_id] = lr
        for step in (1, 2):                      # what the loop reports each step: no eval/ key
            alg.on_trial_result(trial_id, {"step": step, "training_iteration": step, "loss/sds_mse": 1.0})
        alg.on_trial_complete(trial_id, {"step": 3, "training_iteration": 3, "eval/clip_score": score})
    study = alg._ot_study
    assert [t.value for t in study.trials] == [21.0, 27.5]
    assert study.best_trial.params["point/overrides/optim.lr"] == pytest.approx(values["b"])


def test_step_metric_optuna_keeps_strict_checking(tmp_path, monkeypatch):
    from sweeps.search import STRICT_CHECK_ENV, FinalMetricOptuna

    monkeypatch.delenv(STRICT_CHECK_ENV, raising=False)
    sweep = _sweep(tmp_path, "{type: optuna, num_samples: 2, metric: loss/sds_mse, params: {optim.lr: {dist: uniform, low: 0.001, high: 0.01}}}")
    alg = tune_config(sweep).search_alg
    assert not isinstance(alg, FinalMetricOptuna) and STRICT_CHECK_ENV not in __import__("os").environ
