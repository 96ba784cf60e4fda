"""A sweep's results at a glance in the MLflow UI: a saved view of the experiment's chart view.

Measured on MLflow 3.17.2's UI (headless Chromium, `tests/test_browser_glance.py`):
- the chart view charts only the runs the runs table shows: trials nested under a collapsed parent run are not
  charted, and neither the URL nor a saved view can expand a run (`runsExpanded` is not part of a view);
- grouping the runs by a tag flattens the nesting: with `groupBy` on a tag each trial carries (`LABEL_TAG`, its run
  name) every trial is a row and a bar of its own (`useGroupedValuesInCharts: false`), named in the legend;
- a saved view is the experiment tag `mlflow.sharedViewState.<key>` = {name, createdAt, updatedAt, state: JSON};
  the UI lists it under "Views" by name and opens it from the URL `...#/experiments/<id>/runs?viewStateShareKey=<key>`
  (the URL must not carry search parameters too: the UI then ignores the view). Its state holds the charts
  (`compareRunCharts` + `compareRunSections`), `groupBy`, `runsHiddenMode`, the sort and the search filter;
- a run's colour is its tag `mlflow.runColor`.

The view: one bar chart per headline metric with every trial in it, the trials' sample grids as an image chart (a
step slider, `samples/grid`), and a parallel-coordinates chart of the sweep's axes against its headline metrics.
Its size grows with the number of metrics and axes, not of trials (MLflow allows 20,000 characters in an experiment
tag; `view_tag` refuses more).
"""
from __future__ import annotations

import json
import re
import time
from typing import Any, Iterable
from urllib.parse import quote

VIEW_TAG_PREFIX = "mlflow.sharedViewState."     # the UI's saved views (experiment tags)
MAX_VIEW_TAG = 20000                            # mlflow.utils.validation.MAX_EXPERIMENT_TAG_VAL_LENGTH
LABEL_TAG = "sweep.label"                       # a trial's label (its run name): the view groups by it
RUN_COLOR_TAG = "mlflow.runColor"               # the UI's colour of a run
IMAGE_KEY = "samples/grid"
SECTION_ID = "sweep-at-a-glance"
# distinct, colour-blind-safe-ish colours (Okabe-Ito, then Tableau): trial i gets PALETTE[i % len]
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
           "#4E79A7", "#F28E2B", "#E15759", "#76B7B2", "#59A14F", "#EDC948", "#B07AA1", "#FF9DA7")


def run_color(index: Any) -> str:
    """The colour of trial `index` (an int, else a stable hash of it)."""
    i = index if isinstance(index, int) else sum(map(ord, str(index)))
    return PALETTE[i % len(PALETTE)]


def view_key(sweep_name: str) -> str:
    """The saved view's key: one per sweep name (a new launch replaces it)."""
    return "glance-" + (re.sub(r"[^A-Za-z0-9_-]+", "-", sweep_name).strip("-") or "sweep")


def view_state(metrics: Iterable[str], axes: Iterable[str], *, title: str, images: bool = True,
               trials: int = 100, image_step: int = 0, search_filter: str = "") -> dict[str, Any]:
    """The UI state of the view: bar charts of `metrics` (in order), the grids' image chart opened at
    `image_step` (the last grid; its slider reaches the others), parallel coordinates of `axes` (param names)
    against the metrics; trials grouped one per row by `LABEL_TAG`; `search_filter` (MLflow's run search syntax)
    keeps one launch's trials when an experiment holds several."""
    metrics, axes = list(metrics), list(axes)
    shown = max(1, int(trials))

    def card(uuid: str, kind: str, **fields: Any) -> dict[str, Any]:
        return {"uuid": uuid, "type": kind, "runsCountToCompare": shown, "metricSectionId": SECTION_ID,
                "deleted": False, "isGenerated": False, **fields}

    charts = [card(f"bar-{i}", "BAR", metricKey=m, displayName=m) for i, m in enumerate(metrics)]
    if images:   # third: in the first row of a 1600 px wide window, beside the first two metrics
        charts.insert(2, card("grids", "IMAGE", imageKeys=[IMAGE_KEY], step=int(image_step), showRunParams=False))
    if axes and metrics:
        charts.append(card("axes", "PARALLEL", selectedParams=axes, selectedMetrics=metrics, showAllRuns=True))
    return {
        "searchFilter": search_filter, "orderByKey": "attributes.start_time", "orderByAsc": True,
        "runsHiddenMode": "SHOW_ALL", "hideEmptyCharts": True, "isAccordionReordered": True,
        "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": LABEL_TAG}]},
        "useGroupedValuesInCharts": False,
        "compareRunCharts": charts,
        "compareRunSections": [{"uuid": SECTION_ID, "name": title, "display": True, "isReordered": False,
                                "deleted": False, "isGenerated": False}],
    }


def launch_filter(parent_run_id: str) -> str:
    """The search filter of one sweep launch's trials (the UI adds their parent run to the results)."""
    return f"tags.`mlflow.parentRunId` = '{parent_run_id}'"


def view_tag(name: str, state: dict[str, Any], now_ms: int | None = None) -> str:
    """The experiment tag's value: the UI's saved-view envelope around `state`."""
    now = int(now_ms if now_ms is not None else time.time() * 1000)
    value = json.dumps({"name": name, "createdAt": now, "updatedAt": now, "state": json.dumps(state)})
    if len(value) > MAX_VIEW_TAG:
        raise ValueError(f"saved view '{name}' is {len(value)} characters; MLflow keeps at most {MAX_VIEW_TAG} in an "
                         f"experiment tag: chart fewer metrics (MetricKey.headline=False) or fewer sweep axes")
    return value


def view_url(ui: str, experiment_id: str, key: str) -> str:
    """The link that opens the view (model-training sidebar, chart view)."""
    return (f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={quote(key)}"
            f"&compareRunsMode=CHART&workflowType=machine_learning")
