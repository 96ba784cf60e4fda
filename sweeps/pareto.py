"""The answer of a settings search: its Pareto front over the objectives and the trial its pick rule names.

At the end of an Optuna sweep with `objectives` (or a `pick`), the finished trials' final metrics are read from
MLflow and
    front   = the trials no other trial dominates (at least as good on every objective, better on one);
    pick    = `constrained`: the best `objective` among the trials within every `subject_to` bound; when none is
              within them, the trial with the least summed violation (each bound's violation divided by that
              metric's range over the trials), reported as such;
              `knee`: the front trial nearest the ideal point once each objective is min-max normalised over the
              front (best = 1);
logged on the sweep's parent run (`search/pareto.csv`, `search/pareto.png`, `search/pick.json`; tags
`sweep.pick`, `sweep.pick_run_id`, `sweep.pick_rule`), and the picked trial tagged `sweep.picked=true`.
"""
from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation.pareto import pareto_mask
from tracking import (LABEL_TAG, PARENT_RUN_TAG, PICK_RULE_TAG, PICK_RUN_TAG, PICK_TAG, PICKED_TAG, TrackingTarget,
                      experiment_runs, mlflow_client, retry)

from .schema import OptunaSearch, PickRule

TRIAL_NAME_TAG = "sweep.trial_name"   # Tune's trial name (sweeps/trial.py)



@dataclass
class Pick:
    index: int               # row of the trials frame
    note: str                # how it was chosen (and whether the bounds held)


def knee(values: np.ndarray, modes: list[str], front: np.ndarray) -> Pick:
    """The front row nearest the ideal point, objectives min-max normalised over the front (best = 1)."""
    idx = np.flatnonzero(front)
    v = np.asarray(values, dtype=np.float64)[idx] * np.array([1.0 if m == "max" else -1.0 for m in modes])
    lo, hi = v.min(0), v.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    dist = np.sqrt((((v - lo) / span - 1.0) ** 2).sum(1))
    best = int(idx[int(np.argmin(dist))])
    return Pick(best, f"knee of the front ({len(idx)} trials): nearest the ideal point, objectives min-max "
                      f"normalised over the front (distance {dist.min():.3f})")


def constrained(df: pd.DataFrame, objective: str, mode: str, bounds: dict[str, Any]) -> Pick:
    """The best `objective` within every bound; else the least summed, range-normalised violation."""
    violation = pd.Series(0.0, index=df.index)
    for metric, b in bounds.items():
        x = df[metric].astype(float)
        span = float(x.max() - x.min()) or 1.0
        if b.min is not None:
            violation += (b.min - x).clip(lower=0) / span
        if b.max is not None:
            violation += (x - b.max).clip(lower=0) / span
        violation[x.isna()] = math.inf
    text = ", ".join(f"{m} {'>= ' + format(b.min, 'g') if b.min is not None else ''}"
                     f"{' and ' if b.min is not None and b.max is not None else ''}"
                     f"{'<= ' + format(b.max, 'g') if b.max is not None else ''}" for m, b in bounds.items())
    ok = df[violation == 0]
    if not ok.empty:
        col = ok[objective].astype(float)
        best = col.idxmax() if mode == "max" else col.idxmin()
        return Pick(int(df.index.get_loc(best)), f"best {objective} ({mode}) of the {len(ok)} trial(s) with {text}")
    best = violation.idxmin()
    return Pick(int(df.index.get_loc(best)), f"NO trial has {text}: the one that violates the bounds least "
                                             f"(summed range-normalised violation {violation.min():.3f})")


def choose(df: pd.DataFrame, search: OptunaSearch) -> tuple[np.ndarray, Pick | None]:
    """(Pareto mask over the search's objectives, the pick) of a frame with one column per metric."""
    goals = search.goals()
    values = df[[m for m, _ in goals]].to_numpy(dtype=np.float64)
    front = pareto_mask(values, [mode for _, mode in goals])
    rule: PickRule | None = search.pick
    if rule is None:
        return front, None
    if rule.rule == "knee":
        return front, knee(values, [mode for _, mode in goals], front)
    mode = dict(goals)[rule.objective]
    return front, constrained(df, rule.objective, mode, rule.subject_to)


def trial_frame(tracking: TrackingTarget, experiment: str, parent_run_id: str, metrics: list[str]) -> pd.DataFrame:
    """One row per finished trial of the parent that carries every metric: name, run id, params, metrics."""
    client = mlflow_client(tracking)
    _, trials = experiment_runs(client, experiment)
    rows = []
    for t in trials:
        if t.data.tags.get(PARENT_RUN_TAG) != parent_run_id or any(m not in t.data.metrics for m in metrics):
            continue
        rows.append({"trial": t.data.tags.get(LABEL_TAG) or t.info.run_name, "tune_trial": t.data.tags.get(TRIAL_NAME_TAG, ""),
                     "run_id": t.info.run_id,
                     **{f"param/{k}": v for k, v in t.data.params.items()},
                     **{m: t.data.metrics[m] for m in metrics}})
    df = pd.DataFrame(rows)
    if not df.empty and df["trial"].duplicated(keep=False).any():   # labels that do not tell trials apart
        dup = df["trial"].duplicated(keep=False)
        df.loc[dup, "trial"] = df.loc[dup, "trial"] + " (" + df.loc[dup, "tune_trial"].where(
            df.loc[dup, "tune_trial"] != "", df.loc[dup, "run_id"].str[:8]) + ")"
    return df.drop(columns="tune_trial") if not df.empty else df


def _figure(df: pd.DataFrame, goals: list[tuple[str, str]], front: np.ndarray, pick: Pick | None, path: Path) -> None:
    import matplotlib  # late: plotting only at the end of a search

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # late: after the backend is chosen

    (mx, dx), (my, dy) = goals[0], goals[1]
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    ax.scatter(df[mx], df[my], c="#9aa5b1", label="trials", zorder=2)
    f = df[front].sort_values(mx)
    ax.plot(f[mx], f[my], "o-", color="#d1495b", label="Pareto front", zorder=3)
    for _, r in df.iterrows():
        ax.annotate(str(r["trial"]), (r[mx], r[my]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if pick is not None:
        r = df.iloc[pick.index]
        ax.scatter([r[mx]], [r[my]], marker="*", s=320, color="#edae49", edgecolor="black", label="pick", zorder=4)
    ax.set_xlabel(f"{mx} ({'higher' if dx == 'max' else 'lower'} is better)")
    ax.set_ylabel(f"{my} ({'higher' if dy == 'max' else 'lower'} is better)")
    ax.set_title("search: trials, Pareto front, pick" + (f" (first two of {len(goals)} objectives)" if len(goals) > 2 else ""))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def log_search_result(search: OptunaSearch, tracking: TrackingTarget, experiment: str, parent_run_id: str,
                      out) -> Pick | None:
    """Front + pick of a finished search, logged on the parent run and printed; the picked trial tagged."""
    goals = search.goals()
    df = trial_frame(tracking, experiment, parent_run_id, search.metrics())
    if df.empty:
        print(f"search: no finished trial carries {search.metrics()}: no Pareto front or pick", file=out)
        return None
    front, pick = choose(df, search)
    df["on_front"] = front
    df["picked"] = False
    if pick is not None:
        df.loc[df.index[pick.index], "picked"] = True
    client = mlflow_client(tracking)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        cols = ["trial", "run_id", *[c for c in df if c.startswith("param/")], *search.metrics(), "on_front", "picked"]
        df[cols].to_csv(d / "pareto.csv", index=False)
        if len(goals) >= 2:
            _figure(df, goals, front, pick, d / "pareto.png")
        if pick is not None:
            r = df.iloc[pick.index]
            (d / "pick.json").write_text(json.dumps(
                {"rule": search.pick.model_dump(), "trial": r["trial"], "run_id": r["run_id"], "note": pick.note,
                 "metrics": {m: float(r[m]) for m in search.metrics()}}, indent=2))
        for f in sorted(d.iterdir()):
            retry(lambda f=f: client.log_artifact(parent_run_id, str(f), "search"), what="log search result")
    shown = [m for m, _ in goals]
    print(f"\nsearch: Pareto front over {', '.join(shown)}: "
          + ", ".join(df[front]["trial"].astype(str)), file=out)
    if pick is not None:
        r = df.iloc[pick.index]
        retry(lambda: client.set_tag(parent_run_id, PICK_TAG, str(r["trial"])), what="tag pick")
        retry(lambda: client.set_tag(parent_run_id, PICK_RUN_TAG, str(r["run_id"])), what="tag pick")
        retry(lambda: client.set_tag(parent_run_id, PICK_RULE_TAG, search.pick.rule), what="tag pick")
        retry(lambda: client.set_tag(str(r["run_id"]), PICKED_TAG, "true"), what="tag picked trial")
        print(f"search pick ({pick.note}): {r['trial']} "
              + ", ".join(f"{m} {r[m]:.4g}" for m in search.metrics())
              + " (search/pareto.csv, pareto.png, pick.json on the sweep's parent run)", file=out)
    return pick
