"""The Ray Tune side of a sweep: its param space (one `point` per trial), trial names, the progress table,
the TuneConfig (ASHA / Optuna) and the fit (or `--resume`'s restore). Ray is imported inside each function:
it reads its environment when imported, and the launcher sets that first."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .context import TrialContext
from .schema import EVAL_PREFIX
from .spec import AshaSearch, OptunaSearch, Sweep
from .trial import run_trial


def points(sweep: Sweep) -> list[dict[str, Any]]:
    return [{"index": t.index, "overrides": t.overrides} for t in sweep.trials]


def param_space(sweep: Sweep) -> dict[str, Any]:
    from ray import tune  # late: Ray reads its env when imported; the launcher sets it first

    search = sweep.spec.search
    if isinstance(search, OptunaSearch):
        space = {}
        for path, d in search.params.items():
            if d.dist == "uniform":
                space[path] = tune.uniform(d.low, d.high)
            elif d.dist == "loguniform":
                space[path] = tune.loguniform(d.low, d.high)
            elif d.dist == "int":
                space[path] = tune.randint(int(d.low), int(d.high) + 1)
            else:
                space[path] = tune.choice(d.values)
        return {"point": {"index": None, "overrides": space}}
    return {"point": tune.grid_search(points(sweep))}


def trial_name(trial: Any) -> str:
    index = (trial.config.get("point") or {}).get("index")
    return f"trial_{index:03d}" if isinstance(index, int) else f"trial_{trial.trial_id}"


def reporter(sweep: Sweep):
    from ray.tune import CLIReporter  # late: Ray reads its env when imported; the launcher sets it first

    params = {f"point/overrides/{p}": p for p in sweep.varying}
    if isinstance(sweep.spec.search, OptunaSearch):
        params = {f"point/overrides/{p}": p for p in sweep.spec.search.params}
    metrics = {"step": "step", "perf/it_per_s": "it/s", "train/grad_norm": "grad_norm"}
    search = sweep.spec.search
    for metric in (search.metrics() if isinstance(search, OptunaSearch) else [getattr(search, "metric", None)]):
        if metric:
            metrics[metric] = metric
    return CLIReporter(parameter_columns=params, metric_columns=metrics, max_report_frequency=15,
                       sort_by_metric=False, max_progress_rows=50)


def tune_config(sweep: Sweep):
    from ray import tune  # late: Ray reads its env when imported; the launcher sets it first

    search = sweep.spec.search
    kwargs: dict[str, Any] = dict(max_concurrent_trials=sweep.spec.max_concurrent_trials,
                                  trial_name_creator=trial_name, trial_dirname_creator=trial_name,
                                  reuse_actors=sweep.spec.reuse_workers)
    if isinstance(search, AshaSearch):
        from ray.tune.schedulers import ASHAScheduler  # late: Ray reads its env on import (the launcher)

        max_t = search.max_t or max(t.config.train.iterations for t in sweep.trials)
        kwargs["scheduler"] = ASHAScheduler(time_attr="step", metric=search.metric, mode=search.mode,
                                            grace_period=search.grace_period, max_t=max_t,
                                            reduction_factor=search.reduction_factor)
    elif isinstance(search, OptunaSearch):
        # late: Ray reads its env when imported; the launcher sets it first
        from .search import optuna_search

        goals = search.goals()
        kwargs["search_alg"] = optuna_search([m for m, _ in goals], [mode for _, mode in goals], search.seed,
                                             final_only=all(m.startswith(EVAL_PREFIX) for m, _ in goals),
                                             sampler=search.sampler)
        kwargs["num_samples"] = search.num_samples
    return tune.TuneConfig(**kwargs)


def can_restore(exp_dir: Path) -> bool:
    """Tune holds an interrupted (or finished) experiment at `exp_dir`."""
    from ray import tune  # late: Ray reads its env when imported; the launcher sets it first

    return tune.Tuner.can_restore(str(exp_dir))


def fit(sweep: Sweep, ctx: TrialContext, exp_dir: Path, resume: bool):
    """Run every trial (`run_trial` with `ctx`) to the end; `resume`: restore the interrupted experiment."""
    from ray import tune  # late: Ray reads its env when imported; the launcher sets it first

    res = sweep.spec.resources
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx),
                                    {"cpu": res.cpu, "gpu": res.gpu, **res.custom})
    if resume:
        tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(sweep),
            tune_config=tune_config(sweep),
            run_config=tune.RunConfig(
                name=sweep.spec.name,
                storage_path=str(exp_dir.parent),
                failure_config=tune.FailureConfig(max_failures=sweep.spec.retries),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                progress_reporter=reporter(sweep),
                verbose=1,
            ),
        )
    return tuner.fit()
