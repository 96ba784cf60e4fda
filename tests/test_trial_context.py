"""sweeps.context: the frozen, typed TrialContext every trial gets, and the run names built from configs.
(The context's trip through a real Ray Tune run and --resume is covered by tests/test_sweeps_ray.py.)"""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
from pydantic import ValidationError
from ray import cloudpickle

from evaluation.config import EvalConfig
from sweeps.context import TrialContext, name_axes, run_name
from sweeps.spec import load_sweep
from tracking import slug

REPO = Path(__file__).resolve().parents[1]


def _ctx(**kw) -> TrialContext:
    fields = dict(experiment="e", base={"prompt": "a red circle"}, tracking="http://127.0.0.1:5000",
                  trials_dir="/tmp/trials")
    return TrialContext(**{**fields, **kw})


def test_context_is_frozen_and_strict():
    ctx = _ctx()
    with pytest.raises(ValidationError):
        ctx.tracking = "elsewhere"
    with pytest.raises(ValidationError, match="final_flush_timeout"):
        _ctx(final_flush_timeout=3)            # a misspelt field is refused, not silently ignored
    with pytest.raises(ValidationError, match="num_samples"):
        _ctx(evaluation={"num_samples": "many"})
    # the defaults live in one place
    assert (ctx.entrypoint, ctx.log_generator_max_mb, ctx.final_flush_timeout_s, ctx.git_commit) == \
        ("trainables.adaptation.loop:adapt", 256.0, 300.0, "unknown")


def test_context_survives_ray_serialisation():
    ctx = _ctx(evaluation={"num_samples": 16, "device": "cpu"}, parent_run_id="abc", name_axes=("reg.lpips.weight",))
    assert isinstance(ctx.evaluation, EvalConfig) and ctx.evaluation.num_samples == 16
    for dumps, loads in ((cloudpickle.dumps, cloudpickle.loads), (pickle.dumps, pickle.loads)):
        back = loads(dumps(ctx))
        assert back == ctx and isinstance(back.evaluation, EvalConfig)
        assert back.evaluation.as_params() == ctx.evaluation.as_params()
        with pytest.raises(ValidationError):
            back.parent_run_id = "other"


def test_run_trial_refuses_an_untyped_context():
    from sweeps.trial import run_trial

    with pytest.raises(TypeError, match="TrialContext"):
        run_trial({"point": {}}, {"tracking": "x"})


def test_demo_run_names():
    sweep = load_sweep(REPO / "sweeps" / "pocket" / "demo.yaml")
    axes = name_axes(sweep.axes, sweep.varying)
    assert axes == (), "optim.* is zipped with method: determined by it, left out of the name"
    names = [run_name(t.config, axes) for t in sweep.trials]
    assert len(set(names)) == len(names), names
    for t, name in zip(sweep.trials, names):
        # independent rebuild: method, the prompt's words (lowercase, dash-joined, at most 32 chars), seed
        words = re.sub(r"[^a-z0-9]+", " ", t.config.prompt.lower()).split()
        stem = ""
        for w in words:
            if len(f"{stem}-{w}" if stem else w) > 32:
                break
            stem = f"{stem}-{w}" if stem else w
        assert name == f"{t.config.method}-{stem}-s{t.config.seed}"
    assert "fusion-a-red-circle-s0" in names


def test_named_axes_show_in_the_name(tmp_path):
    sweep = load_sweep(REPO / "sweeps" / "pocket" / "demo.yaml")
    cfg = sweep.trials[0].config.model_copy(update={"seed": 3})
    axes = name_axes([["prompt"], ["reg.lpips.weight"], ["seed"], ["method", "optim.lr"]],
                     ["prompt", "reg.lpips.weight", "seed", "method", "optim.lr"])
    assert axes == ("reg.lpips.weight",)
    name = run_name(cfg, axes)
    assert name.endswith(f"-lpips.weight{cfg.reg.lpips.weight:g}-s3"), name
    assert name.startswith(f"{cfg.method}-{slug(cfg.prompt, 32)}-")
