"""Search modes: the Tune param space, scheduler and search algorithm a sweep file produces."""
from __future__ import annotations

import textwrap

import pytest

from sweeps.launcher import _tune_config, param_space, trial_name
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
    cfg = _tune_config(sweep)
    sched = cfg.scheduler
    assert type(sched).__name__ == "AsyncHyperBandScheduler"
    assert sched._time_attr == "step" and sched._max_t == 300 and sched.metric == "loss/sds_mse"


def test_optuna_space_converts(tmp_path):
    import optuna  # noqa: F401  (a declared dependency: if it is missing the install is broken, so fail, not skip)
    sweep = _sweep(tmp_path, "{type: optuna, num_samples: 4, metric: eval/fid, mode: min, params: "
                             "{guidance.cfg_scale: {dist: loguniform, low: 5, high: 100}, "
                             "reg.lpips.weight: {dist: choice, values: [0.0, 0.3]}}}")
    cfg = _tune_config(sweep)
    assert cfg.num_samples == 4
    space = param_space(sweep)
    assert cfg.search_alg.set_search_properties("eval/fid", "min", space)
    suggestion = cfg.search_alg.suggest("t1")
    overrides = suggestion["point"]["overrides"]
    assert 5 <= overrides["guidance.cfg_scale"] <= 100 and overrides["reg.lpips.weight"] in (0.0, 0.3)
    assert sweep.point(overrides).guidance.cfg_scale == overrides["guidance.cfg_scale"]


def test_optuna_param_naming_no_field_is_an_error(tmp_path):
    from sweeps.spec import SweepError

    with pytest.raises(SweepError, match="guidance.cfg_scael' names no AdaptConfig field"):
        _sweep(tmp_path, "{type: optuna, num_samples: 2, metric: m, params: {guidance.cfg_scael: {dist: uniform, low: 1, high: 2}}}")
