"""Run a sweep with Ray Tune: embedded local Ray by default, a cluster with --address or under `ray job submit`.

    python -m sweeps run FILE [--address ADDR] [--tracking-uri URI] [--resume] [--storage PATH]

`run_sweep` is three steps, each a small function returning a typed value for the next:

    resolve  (ResolvedSweep)  the sweep file loaded and validated, every model reference and the entrypoint
                              resolved (nothing starts if one is missing), the storage (`sweeps.storage`), the
                              resume guard (state file, Tune's experiment), the tracking target
                              (`tracking.TrackingTarget.resolve`: --tracking-uri > the file's tracking_uri >
                              MLFLOW_TRACKING_URI > on --resume the store it served > ./mlruns served on loopback)
    plan     (SweepPlan)      trials and resources: `resources.gpu: auto` -> the traced share of a GPU, the base
                              config the trials get, the parent run's tags and trials.csv
    execute  (exit code)      Ray (embedded, or the cluster; on a cluster whose trials can run on other nodes,
                              storage and tracking must be reachable from them: `check_cluster_reach`) -> the
                              local store served when the target needs it -> parent run -> Tuner.fit (or
                              Tuner.restore with --resume) -> the experiment's saved view (results at a
                              glance) -> parent run finished -> the comparison table and the sweep report; Ray and the server stopped on every exit

The storage rule and the state file are in `sweeps/storage.py`, Ray in `sweeps/cluster.py`, Tune in
`sweeps/tuner.py`.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import io
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.report import ordered_headlines, write_report
from evaluation.table import log_table, render
from tracking import ROLE_PARENT, ROLE_TAG, TrackingTarget, finish_run, git_commit, publish_sweep_view, start_parent_run

from .cluster import (REPO_ROOT, check_cluster_reach, init_ray, on_cluster, prepare_embedded_env, quiet_env,
                      shutdown_ray)
from .context import TrialContext, name_axes, search_name_axes
from .cost import resolve_auto_gpu
from .pareto import log_search_result
from .schema import OptunaSearch
from .spec import REF_FIELDS, Sweep, SweepError, check_models, get_dotted, load_sweep, set_dotted
from .storage import STATE_FILE, experiment_dir, read_state, resolve_storage, write_state
from .trial import import_entrypoint
from .tuner import can_restore, fit

__all__ = ["ResolvedSweep", "SweepPlan", "resolve", "plan", "execute", "run_sweep", "resolve_storage",
           "check_cluster_reach", "trials_csv", "STATE_FILE"]


@dataclass(frozen=True)
class ResolvedSweep:
    """Step 1: what the sweep is, where its files go and where its runs go (nothing started yet)."""

    file: str | Path
    sweep: Sweep
    exp_dir: Path                 # <storage>/<sweep name>
    state: dict[str, Any]         # the interrupted sweep's state file on --resume, else {}
    spec_sha256: str              # the sweep file's hash (a resumed sweep must not change it)
    tracking: TrackingTarget
    address: str | None           # --address (None: RAY_ADDRESS, else an embedded Ray)
    cluster: bool                 # a Ray cluster rather than an embedded Ray
    resume: bool


@dataclass(frozen=True)
class SweepPlan:
    """Step 2: what runs, on what resources, under what parent run."""

    resolved: ResolvedSweep
    gpu_fraction: float | None    # resources.gpu: auto -> the traced share of a GPU per trial (None: a number)
    base: dict[str, Any]          # the base config every trial gets (embedded: local model paths made absolute)
    parent_tags: dict[str, Any]   # the sweep's parent run
    trials_csv: str               # the parent run's trials.csv

    @property
    def sweep(self) -> Sweep:
        return self.resolved.sweep


# ---------------------------------------------------------------------------------------------- 1. resolve
def resolve(file: str | Path, *, address: str | None = None, tracking_uri: str | None = None, resume: bool = False,
            storage: str | None = None, skip_model_check: bool = False) -> ResolvedSweep:
    sweep = load_sweep(file)
    if not skip_model_check:
        check_models(sweep)          # fail fast: missing weights stop everything here
    _check_entrypoint(sweep)
    spec = sweep.spec
    exp_dir = experiment_dir(resolve_storage(storage, spec.storage_path), spec.name)
    cluster = on_cluster(address)
    prepare_embedded_env(cluster)
    spec_sha256 = hashlib.sha256(sweep.text.encode()).hexdigest()[:16]
    state = _check_resume(file, spec.name, exp_dir, spec_sha256, resume)
    tracking = TrackingTarget.resolve(cli=tracking_uri, sweep_file=spec.tracking_uri,
                                      recorded_store=state.get("local_store"))
    if cluster and tracking.needs_server:
        raise SweepError(
            f"{file}: running on a Ray cluster but no MLflow tracking URI is known: pass --tracking-uri "
            f"http://<mlflow-host>:5000, set tracking_uri in the sweep file, or start the head with MLFLOW_TRACKING_URI "
            f"in its environment (platform/local/up and platform/ray/cluster.yaml do)")
    return ResolvedSweep(file=file, sweep=sweep, exp_dir=exp_dir, state=state, spec_sha256=spec_sha256,
                         tracking=tracking, address=address, cluster=cluster, resume=resume)


def _check_entrypoint(sweep: Sweep) -> None:
    """The function every trial calls must import here too (same code, same PYTHONPATH as the workers)."""
    try:
        import_entrypoint(sweep.spec.entrypoint)
    except Exception as exc:
        raise SweepError(f"{sweep.marks.where(('entrypoint',))}: entrypoint {sweep.spec.entrypoint!r} cannot be "
                         f"imported ({type(exc).__name__}: {exc}); give 'module:function' with adapt's signature") from None


def _check_resume(file: str | Path, name: str, exp_dir: Path, spec_sha256: str, resume: bool) -> dict[str, Any]:
    """--resume: the interrupted sweep's state (refused when there is none, or the file changed); a new run:
    refused where results already are. Returns the state --resume continues from ({} for a new run)."""
    state = read_state(exp_dir)
    if resume:
        if not can_restore(exp_dir):
            raise SweepError(f"{file}: --resume: no interrupted sweep at {exp_dir} (run it without --resume first, "
                             f"or pass the --storage it ran with)")
        if state.get("spec_sha256") not in (None, spec_sha256):
            raise SweepError(f"{file}: --resume: the sweep file changed since this sweep started (its trials would "
                             f"mix two configs): restore the file as it was, or run the new one under another name")
        return state
    if (exp_dir / STATE_FILE).exists() or can_restore(exp_dir):
        raise SweepError(f"{file}: sweep '{name}' already has results at {exp_dir}: pass --resume to continue "
                         f"it, or choose another name / --storage, or remove that folder to start over")
    return {}


# ---------------------------------------------------------------------------------------------- 2. plan
def plan(resolved: ResolvedSweep, *, verbose: int = 1, out=sys.stdout) -> SweepPlan:
    sweep, spec = resolved.sweep, resolved.sweep.spec
    fraction = resolve_auto_gpu(sweep)   # resources.gpu: auto -> the share of a GPU the traced peak needs
    if fraction is not None and verbose:
        print(f"resources.gpu: auto -> {fraction:g} GPU per trial", file=out)
    return SweepPlan(
        resolved=resolved, gpu_fraction=fraction,
        base=sweep.base if resolved.cluster else _absolutize_refs(sweep.base),
        parent_tags={ROLE_TAG: ROLE_PARENT, "sweep.name": spec.name, "sweep.file": str(resolved.file),
                     "sweep.trials": len(sweep.trials)},
        trials_csv=trials_csv(sweep))


def _absolutize_refs(base: dict[str, Any]) -> dict[str, Any]:
    """Embedded runs: relative local model paths that exist from here become absolute (workers agree)."""
    base = copy.deepcopy(base)
    for ref in REF_FIELDS:
        value = get_dotted(base, ref)
        if isinstance(value, str) and not os.path.isabs(value) and Path(value).exists():
            set_dotted(base, ref, str(Path(value).resolve()))
    return base


def trials_csv(sweep: Sweep) -> str:
    buf = io.StringIO()
    cols = sweep.varying
    writer = csv.writer(buf)
    writer.writerow(["trial", *cols, "iterations"])
    for t in sweep.trials:
        writer.writerow([t.index, *[t.overrides.get(c) for c in cols], t.config.train.iterations])
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- 3. execute
def execute(sweep_plan: SweepPlan, *, out=sys.stdout) -> int:
    """Ray, the tracking target (served when it is a local store), the parent run, the trials, the summary.
    Returns 1 when a trial failed, else 0; Ray and the local server are stopped on every exit."""
    r = sweep_plan.resolved
    embedded = False
    try:
        embedded = init_ray(r.address, r.sweep)
        if r.cluster:
            check_cluster_reach(r.exp_dir.parent, r.tracking, r.sweep)
        if r.tracking.needs_server:
            r.exp_dir.mkdir(parents=True, exist_ok=True)
            r.tracking.start(log_path=r.exp_dir / "mlflow_server.log")
            print(f"MLflow: local store {r.tracking.store} served at {r.tracking.uri}", file=out)
        commit = git_commit(REPO_ROOT)
        parent = _open_parent_run(sweep_plan, commit)
        results = fit(r.sweep, _trial_context(sweep_plan, parent, commit), r.exp_dir, r.resume)
        return _close_parent_run(sweep_plan, parent, results, out)
    finally:
        if embedded:
            shutdown_ray()
        r.tracking.stop()


def _open_parent_run(sweep_plan: SweepPlan, commit: str) -> str:
    """The sweep's parent run (reopened on --resume), and the state file that lets --resume and status find it."""
    r = sweep_plan.resolved
    name = r.sweep.spec.name
    # the launch id is on disk before the run exists: a driver killed between the two is resumed onto that run
    launch_id = (r.state.get("launch_id") if r.resume else None) or uuid.uuid4().hex
    state = {"name": name, "file": str(Path(r.file).resolve()), "launch_id": launch_id,
             "spec_sha256": r.spec_sha256, **r.tracking.record(), "storage_path": str(r.exp_dir.parent),
             "started": time.time()}
    parent_id = r.state.get("parent_run_id") if r.resume else None
    if parent_id is None:
        write_state(r.exp_dir, state)
    parent = start_parent_run(
        r.tracking, name, run_name=name + (" (resumed)" if r.resume else ""),
        tags={**sweep_plan.parent_tags, "git_commit": commit},
        spec_text=r.sweep.text, extra_artifacts={"trials.csv": sweep_plan.trials_csv},
        run_id=parent_id, launch_id=launch_id,
        # the laptop default: artifacts as plain files beside the SQLite store, readable without a server
        artifact_location=r.tracking.artifact_location,
    )
    write_state(r.exp_dir, {**state, "parent_run_id": parent})
    return parent


def _trial_context(sweep_plan: SweepPlan, parent: str, commit: str) -> TrialContext:
    r = sweep_plan.resolved
    spec = r.sweep.spec
    return TrialContext(
        experiment=spec.name, base=sweep_plan.base, checkpoint_every=spec.checkpoint_every,
        entrypoint=spec.entrypoint, tracking=r.tracking, parent_run_id=parent, trials_dir=str(r.exp_dir / "trials"),
        git_commit=commit, evaluation=spec.evaluation or None, log_generator_max_mb=spec.log_generator_max_mb,
        cwd=os.getcwd() if not r.cluster else None, name_axes=name_axes(r.sweep.axes, r.sweep.varying) or search_name_axes(spec.search),
    )


def _close_parent_run(sweep_plan: SweepPlan, parent: str, results, out) -> int:
    """The parent run finished with its children's summary; the sweep's last lines and table printed."""
    r = sweep_plan.resolved
    spec = r.sweep.spec
    errors = sum(1 for res in results if res.error is not None)
    _publish_view(sweep_plan, parent, out)
    finish_run(r.tracking, parent, "FAILED" if errors else "FINISHED",
               tags={"sweep.trials_ok": len(results) - errors, "sweep.trials_failed": errors})
    print(f"\nsweep {spec.name}: {len(results) - errors} trial(s) finished, {errors} failed; "
          f"MLflow experiment '{spec.name}' at {r.tracking.uri}; results in {r.exp_dir}", file=out)
    print(_phase_summary(results), file=out)
    if isinstance(spec.search, OptunaSearch) and (spec.search.objectives or spec.search.pick):
        _log_search_result(spec, r.tracking, parent, out)   # before the report, which shows the front and pick
    if spec.evaluation is not None and len(results) > errors:
        _log_comparison_table(spec.name, r.tracking, parent, out)
        _write_report(spec.name, r.tracking, parent, r.exp_dir, out)
    return 1 if errors else 0


def _log_search_result(spec, tracking: TrackingTarget, parent_run_id: str, out) -> None:
    """A search's Pareto front and pick on its parent run (sweeps/pareto.py)."""
    try:
        log_search_result(spec.search, tracking, spec.name, parent_run_id, out)
    except Exception as exc:  # the trials and their metrics are safe; only the front / pick is missing
        print(f"warning: the search's Pareto front / pick could not be logged ({type(exc).__name__}: {exc})",
              file=out)


def run_sweep(file: str | Path, *, address: str | None = None, tracking_uri: str | None = None,
              resume: bool = False, storage: str | None = None, skip_model_check: bool = False,
              verbose: int = 1, out=sys.stdout) -> int:
    """resolve -> plan -> execute (module docstring). Raises SweepError / MissingModelError before anything
    starts; returns 1 when a trial failed, else 0."""
    quiet_env()
    resolved = resolve(file, address=address, tracking_uri=tracking_uri, resume=resume, storage=storage,
                       skip_model_check=skip_model_check)
    return execute(plan(resolved, verbose=verbose, out=out), out=out)


def _publish_view(sweep_plan: SweepPlan, parent_run_id: str, out) -> None:
    """The sweep's results at a glance: a saved view of the experiment's chart view (one chart per headline metric
    with every trial, the trials' grids, the sweep's axes against its metrics; `tracking.views`). The parent run
    carries no per-trial metrics."""
    sweep = sweep_plan.sweep
    try:
        publish_sweep_view(sweep_plan.resolved.tracking, parent_run_id, ordered_headlines, axes=sweep.varying,
                           ui_name=sweep.spec.name)
    except Exception as exc:  # the trials' own runs hold every number; only the saved view is missing
        print(f"warning: the sweep's saved view could not be written ({type(exc).__name__}: {exc}); the trials' "
              f"runs hold every metric", file=out)


def _write_report(experiment: str, tracking: TrackingTarget, parent_run_id: str, exp_dir: Path, out) -> None:
    """The sweep report (evaluation.report): one self-contained HTML file beside the sweep's results, logged on
    the parent run."""
    try:
        path = write_report(experiment, tracking, exp_dir / "report.html", parent_run_id=parent_run_id, log=True)
    except Exception as exc:  # the table and the runs are safe; only the report is missing
        print(f"warning: the sweep report could not be built ({type(exc).__name__}: {exc}); rebuild it with "
              f"`python -m evaluation report --experiment {experiment} --tracking-uri URI`", file=out)
        return
    print(f"sweep report: {path} (also on the sweep's parent run, report.html)", file=out)


def _log_comparison_table(experiment: str, tracking: TrackingTarget, parent_run_id: str, out) -> None:
    """The paper-style table and comparison figure onto the sweep's parent run, and the table printed."""
    try:
        tables = log_table(experiment, tracking.uri)
    except Exception as exc:  # the trials and their metrics are safe in MLflow; only the summary failed
        print(f"warning: the comparison table could not be built ({type(exc).__name__}: {exc}); rebuild it with "
              f"`python -m evaluation table --experiment {experiment} --tracking-uri URI`", file=out)
        return
    table = tables.get(parent_run_id)
    if table is not None and not table.empty:
        print(f"\n{render(table, 'md')}\n(logged as table/ and comparison.png on the sweep's parent run)", file=out)


def _phase_summary(results) -> str:
    """Mean wall seconds per trial phase over the finished trials (perf/phase/* of their last report)."""
    rows = [r.metrics for r in results if r.error is None and r.metrics]
    keys = ["startup", "load", "adapt", "evaluation", "upload"]
    means = {k: sum(m.get(f"perf/phase/{k}_s", 0.0) for m in rows) / len(rows) for k in keys} if rows else {}
    if not means or not any(means.values()):
        return "trial phases: not reported"
    total = sum(means.values())
    return ("trial phases (mean s): " + ", ".join(f"{k} {v:.1f}" for k, v in means.items())
            + f"; adaptation is {means['adapt'] / total:.0%} of a trial")
