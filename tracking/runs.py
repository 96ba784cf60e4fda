"""Driver-side runs: the sweep's parent run (created, finished), its saved view (`publish_sweep_view`) and the
parent/child split of an experiment. Every call goes through `tracking.errors.retry`."""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from .client import Target, mlflow_client, tracking_uri_of
from .conventions import PARENT_RUN_TAG, ROLE_PARENT, ROLE_TAG, clip_tags, ensure_experiment
from .errors import retry
from .store import sqlite_artifact_location
from .views import VIEW_TAG_PREFIX, launch_filter, view_key, view_state, view_tag


LAUNCH_ID_TAG = "sweep.launch_id"   # the launch that created a parent run: creation is found, not repeated


def start_parent_run(tracking_uri: Target, experiment: str, *, run_name: str, tags: dict[str, Any],
                     spec_text: str | None = None, extra_artifacts: dict[str, str] | None = None,
                     run_id: str | None = None, artifact_location: str | None = None,
                     launch_id: str | None = None) -> str:
    """Create (or reopen) the sweep's parent run; the spec YAML goes in as an artifact. Returns its id.

    `tracking_uri`: a URI or a `TrackingTarget`. `artifact_location` applies when the experiment is created
    (default: beside a SQLite store, else the server's default). `launch_id` makes creation exactly-once: each
    attempt first looks for the experiment's run tagged with it (a create whose response was lost, retried here,
    or a driver killed before it recorded the run id, resumed) and creates only when there is none."""
    client = mlflow_client(tracking_uri)
    if run_id:
        retry(lambda: client.update_run(run_id, status="RUNNING"), what="reopen parent run")
    else:
        location = artifact_location or sqlite_artifact_location(tracking_uri_of(tracking_uri) or "")
        exp_id = retry(lambda: ensure_experiment(client, experiment, location), what="create experiment")
        run_tags = clip_tags(dict(tags, **({LAUNCH_ID_TAG: launch_id} if launch_id else {})))

        def find_or_create() -> str:
            if launch_id:
                found = client.search_runs([exp_id], filter_string=f"tags.`{LAUNCH_ID_TAG}` = '{launch_id}'",
                                           max_results=1)
                if found:
                    return found[0].info.run_id
            return client.create_run(exp_id, run_name=run_name, tags=run_tags).info.run_id

        run_id = retry(find_or_create, what="create parent run")
    with tempfile.TemporaryDirectory() as tmp:
        files = dict(extra_artifacts or {})
        if spec_text is not None:
            files["sweep.yaml"] = spec_text
        for name, text in files.items():
            (Path(tmp) / name).write_text(text)
            retry(lambda: client.log_artifact(run_id, str(Path(tmp) / name)), what="log parent artifact")
    return run_id


def finish_run(tracking_uri: Target, run_id: str, status: str = "FINISHED", tags: dict[str, Any] | None = None) -> None:
    from mlflow.entities import RunTag  # late: mlflow (~1.6 s) loads on first use (client.py)

    client = mlflow_client(tracking_uri)
    if tags:
        retry(lambda: client.log_batch(run_id, tags=[RunTag(k, v) for k, v in clip_tags(tags).items()]),
              what="tag run")
    retry(lambda: client.set_terminated(run_id, status), what="finish run")


def experiment_runs(client: Any, experiment: str) -> tuple[list, list]:
    """(parent runs, trial runs) of an experiment; parents: tag sweep.role=parent or referenced as parent."""
    exp = retry(lambda: client.get_experiment_by_name(experiment), what="find experiment")
    if exp is None:
        raise ValueError(f"no MLflow experiment named {experiment!r} at {client.tracking_uri}")
    runs, token = [], None
    while True:
        page = retry(lambda: client.search_runs([exp.experiment_id], max_results=1000, page_token=token),
                     what="search runs")
        runs.extend(page)
        token = page.token
        if not token:
            break
    parent_ids = {r.data.tags.get(PARENT_RUN_TAG) for r in runs} - {None}
    parents = [r for r in runs if r.info.run_id in parent_ids or r.data.tags.get(ROLE_TAG) == ROLE_PARENT]
    pset = {r.info.run_id for r in parents}
    trials = [r for r in runs if r.info.run_id not in pset]
    return parents, trials


def publish_sweep_view(tracking_uri: Target, parent_run_id: str, select: Callable[[set[str]], Iterable[str]],
                       axes: Iterable[str] = (), ui_name: str | None = None) -> tuple[str, str, list[str]]:
    """The sweep's results at a glance (`tracking.views`): a saved view of its experiment's chart view, one bar
    chart per metric `select` keeps of the trials' metric keys (every trial in it), the trials' grids, the sweep's
    `axes` against those metrics. Nothing is logged on the parent run (it stays bounded at any number of trials).
    Returns (experiment id, view key, the charted metrics)."""
    client = mlflow_client(tracking_uri)
    parent = retry(lambda: client.get_run(parent_run_id), what="read parent run")
    exp_id = parent.info.experiment_id
    keys: set[str] = set()
    steps, trials = [0], 0
    token = None
    while True:   # a page at a time: the children's metric keys only
        page = retry(lambda: client.search_runs([exp_id], f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}'",
                                                max_results=1000, page_token=token), what="search child runs")
        keys.update(k for c in page for k in c.data.metrics)
        steps += [_int(c.data.params.get("train.iterations")) for c in page]   # the last grid's step
        trials += len(page)
        token = page.token
        if not token:
            break
    chosen = select(keys)
    metrics = sorted(chosen) if isinstance(chosen, (set, frozenset)) else list(chosen)
    name = ui_name or parent.info.run_name or parent_run_id
    key = view_key(parent.data.tags.get("sweep.name") or name)
    state = view_state(metrics, axes, title=f"{name}: results at a glance", trials=max(trials, 1),
                       image_step=max(steps), search_filter=launch_filter(parent_run_id))
    retry(lambda: client.set_experiment_tag(exp_id, VIEW_TAG_PREFIX + key, view_tag(f"{name} at a glance", state)),
          what="save the sweep's view")
    return exp_id, key, metrics


def _int(value: Any) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return 0


def git_commit(cwd: str | Path | None = None) -> str:
    """The commit a run's code came from (tag git_commit); 'unknown' without git."""
    if shutil.which("git") is None:
        return "unknown"
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except Exception:
        return "unknown"
