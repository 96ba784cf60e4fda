"""One sweep trial inside a Ray worker: config -> MLflow child run -> adapt (resumable) -> evaluation.

The Tune param space holds one key, `point` = {"index": i, "overrides": {dotted path: value}}; everything
the sweep shares (the base config, tracking target, parent run id, storage) arrives as a frozen
`sweeps.context.TrialContext` through `tune.with_parameters`, so it is not a hyperparameter and is not shown
in tables. The trial's MLflow run is named from its config (`context.run_name`, e.g. fusion-a-red-circle-s0);
Tune's trial id and name are tags (sweep.trial_id, sweep.trial_name).
"""
from __future__ import annotations

import importlib
import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

import yaml

from evaluation import evaluate_run
from evaluation.runner import (ERROR_ARTIFACT_DIR, evaluation_params, evaluation_tags, failed_evaluation,
                               unit_slug)
from trainables.frozen import model_cache
from trainables.registry import GUIDANCE
from trainables.config import AdaptConfig, flatten
from trainables.adaptation.tune import TrackingCallback, TuneReportCallback, restore_checkpoint
from tracking import LABEL_TAG, ROLE_TAG, ROLE_TRIAL, RUN_COLOR_TAG, TRIAL_ID_TAG, RunTracker, run_color

from .context import TrialContext, run_name
from .grid_images import GridImages
from .spec import build_config


def import_entrypoint(path: str):
    module, _, name = path.partition(":")
    if not module or not name:
        raise ValueError(f"entrypoint {path!r} must be 'module:function'")
    return getattr(importlib.import_module(module), name)


def trial_tags(cfg: AdaptConfig, trial_id: str, trial_name: str, index: Any, git_commit: str,
               label: str | None = None) -> dict[str, Any]:
    """The trial run's tags; `label` (its run name) is what the sweep's saved view groups by (tracking.views)."""
    models_label = getattr(GUIDANCE.declaration(cfg.method), "models_label", None)   # optional for one's own methods
    guidance_model = models_label(cfg) if models_label is not None else cfg.method
    return {
        LABEL_TAG: label or trial_name,
        RUN_COLOR_TAG: run_color(index),
        ROLE_TAG: ROLE_TRIAL,
        TRIAL_ID_TAG: trial_id,
        "sweep.trial_name": trial_name,
        "sweep.trial_index": index,
        "method": cfg.method,
        "prompt": cfg.prompt,
        "source_domain": cfg.source_prompt,
        "generator": cfg.generator.checkpoint,
        "guidance_model": guidance_model,
        "git_commit": git_commit,
    }


def _evaluate(ctx: TrialContext, cfg: AdaptConfig, result: Any, out_dir: Path, tracker: RunTracker) -> dict[str, float]:
    """The trial's last stage: evaluation.evaluate_run on the adapted generator (the sweep's `evaluation:`).

    With the tracking server reachable, evaluation logs into the trial's run itself (its metrics, params and
    sample manifest); otherwise it runs unlogged and its metrics go through the trial's spool.
    Evaluation never fails the trial: each metric is isolated (a failed one is recorded as tag
    `eval.error.<metric>` + artifact `eval/errors/<metric>.txt`, the others are logged), and an evaluation
    that cannot run at all records every metric as failed. The training's results stay, and
    `python -m evaluation run --experiment NAME --only-missing` fills in the missing metrics later.
    """
    eval_cfg = ctx.evaluation
    online = tracker.flush(60.0)    # the run and its eval.* params must be visible to evaluation's checks
    try:
        metrics = evaluate_run(Path(result.generator_path), cfg.prompt, eval_cfg, ctx.tracking.uri,
                               run_id=tracker.run_id if online else None,
                               source_generator=cfg.generator.checkpoint, out_dir=out_dir,
                               generator_kind=cfg.generator.kind)
        raised = False
    except Exception as exc:  # noqa: BLE001 - recorded below through the spool, the trial still finishes
        metrics, online, raised = failed_evaluation(eval_cfg, exc), False, True
    errors = metrics.errors
    values = {k if k.startswith("eval/") else f"eval/{k}": float(v) for k, v in metrics.items()
              if isinstance(v, (int, float))}
    if not online:
        tracker.log_metrics(values, step=int(result.steps))
        manifest_path = out_dir / "samples" / "manifest.json"
        samples = manifest_path.parent if manifest_path.is_file() and not raised else None
        tags = evaluation_tags(eval_cfg, samples, errors=errors)
        if samples is not None:
            tracker.log_artifact(manifest_path, "eval")
            manifest = json.loads(manifest_path.read_text())
            tracker.log_params({"eval.latents.sha256": evaluation_params(eval_cfg, manifest)["eval.latents.sha256"]})
        else:
            tags.pop("eval.fingerprint", None)
        tracker.set_tags(tags)
        for unit, err in errors.items():
            tracker.log_text(err.report(), f"{unit_slug(unit)}.txt", ERROR_ARTIFACT_DIR)
    for unit, err in errors.items():
        print(f"evaluation metric {unit} failed (the trial goes on; recorded as eval.error.{unit_slug(unit)}): "
              f"{err.reason}", flush=True)
    return values


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """The Tune function trainable of every sweep."""
    from ray import tune  # late: Ray reads its env when imported; sweeps/launcher sets it after importing us

    tic_start = time.perf_counter()

    # relative model refs resolve as in the driver (embedded) or the job's working dir (cluster), never
    # against Tune's trial dir (runtime_env sets RAY_CHDIR_TO_TRIAL_DIR=0; this covers clusters without it)
    if not isinstance(ctx, TrialContext):
        raise TypeError(f"run_trial needs a sweeps.context.TrialContext, got {type(ctx).__name__}: a sweep "
                        f"started by an older version of this code cannot be resumed by this one; rerun it")
    # frozen models (SD, CLIP) outlive the trial in this worker: the next trial Tune runs here reuses them
    model_cache.enable(ctx.model_cache_entries)
    cwd = ctx.cwd or os.environ.get("TUNE_ORIG_WORKING_DIR")
    if cwd and Path(cwd).is_dir():
        os.chdir(cwd)
    tctx = tune.get_context()
    trial_id, trial_name = tctx.get_trial_id(), tctx.get_trial_name()
    point = config["point"]
    index = point.get("index", trial_id)
    overrides = point.get("overrides", {})
    # optuna puts sampled values beside the fixed ones
    cfg = build_config(ctx.base, overrides, ctx.checkpoint_every)

    trial_dir = Path(ctx.trials_dir) / trial_name
    trial_dir.mkdir(parents=True, exist_ok=True)
    cfg = cfg.model_copy(update={"output_dir": str(trial_dir / "adapt"), "name": trial_name})
    cfg = AdaptConfig.model_validate(cfg.model_dump())

    restored = restore_checkpoint(trial_dir / "restored")
    tracker = RunTracker(
        ctx.tracking.uri, ctx.experiment, spool_dir=trial_dir / "mlflow_spool",
        run_id=restored.state.get("mlflow_run_id"), parent_run_id=ctx.parent_run_id,
        run_name=(name := run_name(cfg, ctx.name_axes)),
        tags=trial_tags(cfg, trial_id, trial_name, index, ctx.git_commit, label=name),
    )
    # a run id before start(): this attempt continues a run an earlier attempt logged into (even one killed
    # before its first checkpoint), so replayed steps must be checked against MLflow (exactly once)
    continues_run = tracker.run_id is not None
    tracker.start()
    resumed = restored.resume_from is not None
    tracker.set_tags({"sweep.attempts": int(restored.state.get("attempt", 0)) + 1,
                      "sweep.resumed_from_step": int(restored.state.get("step", 0))})
    if not resumed:
        params = flatten(cfg)
        params.pop("output_dir", None)
        params["sweep.trial_index"] = index
        run_params = getattr(GUIDANCE.declaration(cfg.method), "run_params", None)   # e.g. LoRA files' sha256
        params.update(run_params(cfg) if run_params is not None else {})
        tracker.log_params(params)
        tracker.log_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False), "config.yaml", "config")
        tracker.log_text(cfg.prompt, "prompt.txt", "config")
        if ctx.evaluation is not None:   # validated by the launcher (TrialContext): nothing to catch here
            tracker.log_params(ctx.evaluation.as_params())

    attempt = int(restored.state.get("attempt", 0)) + 1
    report = TuneReportCallback(state=lambda: {"mlflow_run_id": tracker.run_id, "attempt": attempt},
                                staging_dir=trial_dir)
    callbacks = [TrackingCallback(tracker, ctx.log_generator_max_mb, continues_run=continues_run),
                 GridImages(tracker, trial_dir / "mlflow_images", continues_run=continues_run),   # image charts
                 report]
    adapt = import_entrypoint(ctx.entrypoint)
    try:
        phases = {"startup": time.perf_counter() - tic_start}       # Ray worker to the loop's first line
        cache_before = model_cache.stats()
        result = adapt(cfg, callbacks=callbacks, resume_from=restored.resume_from)
        cache_after = model_cache.stats()
        phases.update(getattr(result, "phases", {}) or {})          # load, adapt (trainables.adaptation.loop)
        extra: dict[str, float] = {}
        tic = time.perf_counter()
        if ctx.evaluation is not None:
            extra = _evaluate(ctx, cfg, result, trial_dir / "eval", tracker)
        phases["evaluation"] = time.perf_counter() - tic
        tic = time.perf_counter()
        tracker.flush(ctx.final_flush_timeout_s)                    # uploads: metrics, grids, the generator
        phases["upload"] = time.perf_counter() - tic
        phase_metrics = {f"perf/phase/{k}_s": float(v) for k, v in phases.items()}
        total = sum(phases.values())
        phase_metrics["perf/phase/adapt_share"] = phases.get("adapt", 0.0) / total if total else 0.0
        tracker.log_metrics(phase_metrics, step=int(result.steps))
        tracker.set_tags({"sweep.status": "finished", "sweep.model_cache": f"{cache_after.hits - cache_before.hits} "
                          f"hits, {cache_after.misses - cache_before.misses} misses"})
        tracker.close("FINISHED", timeout=ctx.final_flush_timeout_s)
        report.flush(extra={**extra, **phase_metrics, "done_steps": int(result.steps)})
    except BaseException as exc:
        tracker.set_tags({"sweep.error": f"{type(exc).__name__}: {exc}"[:4000]})
        tracker.log_text(traceback.format_exc(), "error.txt", "")
        tracker.close("FAILED", timeout=30.0)
        raise
