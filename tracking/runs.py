"""Driver-side runs: the sweep's parent run (created, finished, given its children's summary) and the
parent/child split of an experiment. Every call goes through `tracking.errors.retry`."""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from .client import Target, mlflow_client, tracking_uri_of
from .conventions import PARENT_RUN_TAG, ROLE_PARENT, ROLE_TAG, clip_tags, ensure_experiment
from .errors import retry
from .store import sqlite_artifact_location


def start_parent_run(tracking_uri: Target, experiment: str, *, run_name: str, tags: dict[str, Any],
                     spec_text: str | None = None, extra_artifacts: dict[str, str] | None = None,
                     run_id: str | None = None, artifact_location: str | None = None) -> str:
    """Create (or reopen) the sweep's parent run; the spec YAML goes in as an artifact. Returns its id.

    `tracking_uri`: a URI or a `TrackingTarget`. `artifact_location` applies when the experiment is created
    (default: beside a SQLite store, else the server's default)."""
    client = mlflow_client(tracking_uri)
    if run_id:
        retry(lambda: client.update_run(run_id, status="RUNNING"), what="reopen parent run")
    else:
        location = artifact_location or sqlite_artifact_location(tracking_uri_of(tracking_uri) or "")
        exp_id = retry(lambda: ensure_experiment(client, experiment, location), what="create experiment")
        run = retry(lambda: client.create_run(exp_id, run_name=run_name, tags=clip_tags(tags)),
                    what="create parent run")
        run_id = run.info.run_id
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


def summary_key(run_name: str, metric: str) -> str:
    """`<metric>/<run name>` (characters MLflow refuses in a key replaced by '_'): the chart view makes one
    section per metric (the key up to its last '/'), holding one chart per trial."""
    return re.sub(r"[^\w\-. /]", "_", f"{metric}/{run_name}")


def summarize_children(tracking_uri: Target, parent_run_id: str,
                       select: Callable[[set[str]], set[str]]) -> dict[str, float]:
    """Log each child run's latest value of the metrics `select` keeps (given every children's metric key) onto
    the parent, as
    `<metric>/<child run name>` (step 0): the chart view of a collapsed parent then shows every trial's
    result. Returns what was logged."""
    from mlflow.entities import Metric  # late: mlflow (~1.6 s) loads on first use (client.py)

    client = mlflow_client(tracking_uri)
    parent = retry(lambda: client.get_run(parent_run_id), what="read parent run")
    children = retry(lambda: client.search_runs([parent.info.experiment_id],
                                                f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}'", max_results=5000),
                     what="search child runs")
    keep = select({k for c in children for k in c.data.metrics})
    values = {summary_key(c.info.run_name or c.info.run_id, k): float(v)
              for c in children for k, v in c.data.metrics.items() if k in keep}
    now = int(time.time() * 1000)
    items = [Metric(k, v, now, 0) for k, v in sorted(values.items())]
    for i in range(0, len(items), 1000):
        retry(lambda: client.log_batch(parent_run_id, metrics=items[i:i + 1000]), what="log children summary")
    return values


def git_commit(cwd: str | Path | None = None) -> str:
    """The commit a run's code came from (tag git_commit); 'unknown' without git."""
    if shutil.which("git") is None:
        return "unknown"
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except Exception:
        return "unknown"
