"""`python -m sweeps status NAME`: trials done/running/failed/pending and their latest metrics.

Reads Tune's experiment state under the storage path, and the MLflow parent/child runs when the tracking
store is reachable.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from tracking import TrackingTarget

from .storage import experiment_dir, read_state, resolve_storage
from .spec import load_sweep

SHOW_METRICS = ("step", "perf/it_per_s", "train/grad_norm", "loss/sds_mse", "eval/fid", "eval/clip_score")


def _locate(name: str, storage: str | None) -> tuple[str, Path]:
    """The sweep's folder by the launcher's storage rule (--storage > file > SWEEPS_STORAGE > runs/sweeps)."""
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        sweep = load_sweep(name)
        return sweep.spec.name, experiment_dir(resolve_storage(storage, sweep.spec.storage_path), sweep.spec.name)
    return name, experiment_dir(resolve_storage(storage), name)


def sweep_status(name: str, storage: str | None = None, tracking_uri: str | None = None) -> str:
    name, exp_dir = _locate(name, storage)
    lines = [f"sweep {name} ({exp_dir})"]
    if not exp_dir.exists():
        return lines[0] + (": no such sweep here (pass the --storage it ran with, set SWEEPS_STORAGE as when it "
                           "ran, or give the sweep file)")
    state = read_state(exp_dir)
    try:
        from ray.tune import ExperimentAnalysis  # late: Ray reads its env on import (sweeps/launcher.py)

        analysis = ExperimentAnalysis(str(exp_dir))
        trials = analysis.trials
    except Exception as exc:  # no experiment state yet
        trials = []
        lines.append(f"  Tune state: unavailable ({type(exc).__name__}: {str(exc)[:200]})")
    if trials:
        counts = Counter(t.status for t in trials)
        done, failed = counts.get("TERMINATED", 0), counts.get("ERROR", 0)
        running, pending = counts.get("RUNNING", 0), counts.get("PENDING", 0) + counts.get("PAUSED", 0)
        lines.append(f"  trials: {len(trials)} total, {done} done, {running} running, {failed} failed, {pending} pending")
        header = ["trial", "status", *SHOW_METRICS]
        rows = []
        for t in sorted(trials, key=lambda t: str(t)):
            r = t.last_result or {}
            rows.append([str(t), t.status, *[_fmt(r.get(m)) for m in SHOW_METRICS]])
        widths = [max(len(x) for x in col) for col in zip(header, *rows)]
        for row in [header, *rows]:
            lines.append("  " + "  ".join(x.ljust(w) for x, w in zip(row, widths)))
    # --tracking-uri, else what the sweep recorded (a served local store: read directly, no server)
    target = TrackingTarget(tracking_uri, source="--tracking-uri") if tracking_uri else TrackingTarget.from_record(state)
    parent = state.get("parent_run_id")
    if target is not None and parent:
        lines.extend(_mlflow_lines(target, name, parent))
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _mlflow_lines(target: TrackingTarget, experiment: str, parent: str) -> list[str]:
    uri = target.uri
    try:   # one try, no retry: status answers at once, unreachable is a valid answer
        client = target.client()
        exp = client.get_experiment_by_name(experiment)
        runs = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
        statuses = Counter(r.info.status for r in runs)
        parent_run = client.get_run(parent)
        return [f"  MLflow ({uri}): parent run {parent} {parent_run.info.status}; child runs: "
                + (", ".join(f"{n} {s.lower()}" for s, n in statuses.items()) or "none")]
    except Exception as exc:
        return [f"  MLflow ({uri}): unreachable ({type(exc).__name__}: {str(exc)[:120]})"]
