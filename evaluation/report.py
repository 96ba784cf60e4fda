"""The sweep report: one self-contained HTML file (figures embedded as base64 PNG, no script, no network) that
opens anywhere and can be sent to a colleague.

    python -m evaluation report --experiment NAME [--out report.html] [--tracking-uri URI] [--parent RUN] [--no-log]

Sections: the table (best per column in bold, ± the seed spread), per-prompt comparison grids (the frozen source
row first, then each trial's adapted row on the same latents), each headline metric against each swept axis, the
trade-off of the prompt score (CLIP score) against FID (or, in the pocket world, against attribute preservation)
with its Pareto front, and the training curves. Written at the end of every sweep with an evaluation block
(`sweeps/launcher.py`) beside its results and logged on the sweep's parent run as `report.html`.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
from PIL import Image

from tracking import (PARENT_RUN_TAG, PICK_RULE_TAG, PICK_TAG, TrackingTarget, experiment_runs, mlflow_client,
                      retry)

from .pareto import pareto_mask
from .table import MetricSpec, aggregate, headline_metrics, runs_dataframe

REPORT_ARTIFACT = "report.html"
GRID_ARTIFACT = "samples/final.png"       # the trial's last grid: frozen row on top, adapted row below
GRID_PAD = 2                              # trainables.adaptation.grids.save_rows' padding
NOT_AXES = {"name", "output_dir", "sweep.trial_index"}   # params that differ per trial without being swept
CURVE_PREFIXES = ("loss/", "sds/", "nada/", "reg/", "train/")
MAX_CURVES, MAX_CURVE_TRIALS, MAX_GRID_TRIALS = 6, 24, 16
PROMPT_SCORE = "eval/clip_score"
# the first one present: FID, else the pocket judge's preservation, else the platform's preservation metrics
TRADE_OFF_X = ("eval/fid", "eval/pocket/preservation", "eval/preservation/clip", "eval/preservation/lpips",
               "eval/pocket/fid_gt")


def ordered_headlines(keys: set[str]) -> list[str]:
    """`evaluation.table.headline_metrics` in a reading order: the prompt score and the paper's metrics first."""
    chosen = headline_metrics(keys)
    first = [PROMPT_SCORE, "eval/fid", "eval/pocket/prompt_accuracy", "eval/pocket/preservation"]
    return [k for k in first if k in chosen] + sorted(chosen - set(first))


@dataclass
class SweepRuns:
    """What the report reads: the sweep's parent run and its trials (MLflow run objects)."""

    experiment: str
    parent: Any
    trials: list
    axes: list[str] = field(default_factory=list)

    @property
    def parent_id(self) -> str:
        return self.parent.info.run_id


def load_sweep_runs(experiment: str, tracking: "str | TrackingTarget", parent_run_id: str | None = None) -> SweepRuns:
    """The newest sweep launch of `experiment` (or `parent_run_id`) and its trials; the axes are the params
    whose values differ between its trials."""
    client = mlflow_client(tracking)
    parents, trials = experiment_runs(client, experiment)
    if parent_run_id is None:
        if not parents:
            raise ValueError(f"experiment {experiment!r} has no sweep run (tag sweep.role=parent): run a sweep first, "
                             f"or pass --parent RUN_ID")
        parent = max(parents, key=lambda r: r.info.start_time or 0)
    else:
        parent = next((p for p in parents if p.info.run_id == parent_run_id), None)
        if parent is None:
            raise ValueError(f"--parent {parent_run_id}: not a sweep run of experiment {experiment!r}")
    mine = [t for t in trials if t.data.tags.get(PARENT_RUN_TAG) == parent.info.run_id]
    if not mine:
        raise ValueError(f"sweep run {parent.info.run_id} of {experiment!r} has no trial runs")
    return SweepRuns(experiment, parent, mine, swept_axes(t.data.params for t in mine))


def swept_axes(params: Iterable[dict[str, str]]) -> list[str]:
    """The params whose value differs between runs (the sweep's axes), bookkeeping and eval.* params aside."""
    rows = list(params)
    keys = sorted({k for p in rows for k in p})
    return [k for k in keys if k not in NOT_AXES and not k.startswith("eval.")
            and len({p.get(k) for p in rows}) > 1]


# ---------------------------------------------------------------------------------------------- figures
def _png(fig) -> str:
    import matplotlib.pyplot as plt  # late: matplotlib (~0.5 s) only when a report is built

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _pyplot():
    import matplotlib  # late: matplotlib (~0.5 s) only when a report is built

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # late: as above

    return plt


def _grid_rows(path: Path) -> tuple[Image.Image, Image.Image]:
    """(frozen row, adapted row) of a 2-row sample grid."""
    with Image.open(path) as im:
        im = im.convert("RGB")
    h = (im.height - 3 * GRID_PAD) // 2
    top = im.crop((0, GRID_PAD, im.width, GRID_PAD + h))
    bottom = im.crop((0, 2 * GRID_PAD + h, im.width, 2 * GRID_PAD + 2 * h))
    return top, bottom


def comparison_grids(runs: SweepRuns, tracking: "str | TrackingTarget", work: Path) -> list[tuple[str, str]]:
    """Per prompt: the frozen source row first, then each trial's adapted row (its final grid). [(prompt, png)]"""
    import mlflow.artifacts  # late: mlflow (~1.6 s) loads on first use

    plt = _pyplot()
    uri = mlflow_client(tracking).tracking_uri
    by_prompt: dict[str, list] = {}
    for t in sorted(runs.trials, key=lambda r: r.info.run_name or ""):
        by_prompt.setdefault(t.data.params.get("prompt", "?"), []).append(t)
    out = []
    for prompt, trials in by_prompt.items():
        rows: list[tuple[str, Image.Image]] = []
        for t in trials[:MAX_GRID_TRIALS]:
            try:
                local = mlflow.artifacts.download_artifacts(run_id=t.info.run_id, artifact_path=GRID_ARTIFACT,
                                                            dst_path=str(work / t.info.run_id), tracking_uri=uri)
            except Exception:  # noqa: BLE001 - a trial without a grid is left out of the figure
                continue
            frozen, adapted = _grid_rows(Path(local))
            if not rows:
                rows.append(("source (frozen)", frozen))
            rows.append((t.info.run_name or t.info.run_id, adapted))
        if not rows:
            continue
        fig, axs = plt.subplots(len(rows), 1, figsize=(10, 1.25 * len(rows)), squeeze=False)
        for ax, (label, img) in zip(axs[:, 0], rows):
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
        fig.suptitle(prompt, fontsize=11)
        out.append((prompt, _png(fig)))
    return out


def metric_vs_axes(df: pd.DataFrame, metrics: list[str], axes: list[str]) -> str | None:
    """Each headline metric (rows) against each swept axis (columns): one point per trial, coloured by method."""
    axes = [a for a in axes if f"param/{a}" in df]
    if not metrics or not axes:
        return None
    plt = _pyplot()
    fig, axs = plt.subplots(len(metrics), len(axes), figsize=(3.2 * len(axes), 2.4 * len(metrics)), squeeze=False)
    methods = sorted(df["method"].astype(str).unique())
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    for i, metric in enumerate(metrics):
        for j, axis in enumerate(axes):
            ax = axs[i, j]
            # a param only some trials log (guidance.lora.0.sha256) is NaN on the others: pandas 3's astype(str)
            # keeps NaN, a float, which no tick label takes; shown as "-"
            values = df[f"param/{axis}"].fillna("-").astype(str)
            cats = sorted(values.unique(), key=_natural)
            pos = {c: k for k, c in enumerate(cats)}
            for method in methods:
                sel = (df["method"].astype(str) == method) & df[metric].notna() if metric in df else None
                if sel is None or not sel.any():
                    continue
                ax.scatter([pos[v] for v in values[sel]], df.loc[sel, metric], color=colors[method], label=method,
                           s=28, alpha=0.85)
            ax.set_xticks(range(len(cats)))
            ax.set_xticklabels([c if len(c) <= 14 else c[:13] + "…" for c in cats], fontsize=7, rotation=20)
            if j == 0:
                ax.set_ylabel(metric.removeprefix("eval/"), fontsize=8)
            if i == 0:
                ax.set_title(axis, fontsize=9)
            ax.grid(alpha=0.3)
    handles, labels = axs[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper right", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def pareto_front(points: list[tuple[float, float]], x_better: str, y_better: str) -> list[int]:
    """Indices of the points no other point dominates (at least as good in both, better in one)."""
    if not points:
        return []
    return [int(i) for i in np.flatnonzero(pareto_mask(points, [x_better, y_better]))]


def trade_off(df: pd.DataFrame, better: dict[str, str | None]) -> tuple[str, str | None]:
    """(caption, png): the prompt score against FID (or preservation) per trial, the Pareto front marked."""
    x_key = next((k for k in TRADE_OFF_X if k in df and df[k].notna().any()), None)
    if PROMPT_SCORE not in df or x_key is None:
        return ("no trade-off plot: the trials lack " + (PROMPT_SCORE if PROMPT_SCORE not in df else
                                                         " or ".join(TRADE_OFF_X)), None)
    x_better = better.get(x_key) or ("min" if "fid" in x_key else "max")
    y_better = better.get(PROMPT_SCORE) or "max"
    sel = df[[x_key, PROMPT_SCORE]].notna().all(axis=1)
    d = df[sel].reset_index(drop=True)
    points = list(zip(d[x_key].astype(float), d[PROMPT_SCORE].astype(float)))
    front = pareto_front(points, x_better, y_better)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    methods = sorted(d["method"].astype(str).unique())
    for i, method in enumerate(methods):
        m = d["method"].astype(str) == method
        ax.scatter(d.loc[m, x_key], d.loc[m, PROMPT_SCORE], color=plt.cm.tab10(i % 10), label=method, s=36)
    fp = sorted((points[i] for i in front), key=lambda p: p[0])
    ax.plot([p[0] for p in fp], [p[1] for p in fp], "k--", lw=1, label="Pareto front")
    ax.scatter([p[0] for p in fp], [p[1] for p in fp], facecolors="none", edgecolors="k", s=120, lw=1.2)
    for i in front:
        ax.annotate(str(d.loc[i, "run_name"]), points[i], fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(f"{x_key} ({'higher' if x_better == 'max' else 'lower'} is better)")
    ax.set_ylabel(f"{PROMPT_SCORE} ({'higher' if y_better == 'max' else 'lower'} is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    caption = (f"{PROMPT_SCORE} against {x_key}, one point per trial; circled and joined: the Pareto front "
               f"({len(front)} of {len(points)} trials)")
    return caption, _png(fig)


def training_curves(runs: SweepRuns, tracking: "str | TrackingTarget") -> str | None:
    """The step metrics of the trials (loss, guidance norms), one panel per metric, one line per trial."""
    client = mlflow_client(tracking)
    trials = sorted(runs.trials, key=lambda r: r.info.run_name or "")[:MAX_CURVE_TRIALS]
    keys = sorted({k for t in trials for k in t.data.metrics if k.startswith(CURVE_PREFIXES) and k != "train/t"})
    keys = keys[:MAX_CURVES]
    if not keys:
        return None
    plt = _pyplot()
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axs = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False)
    for n, key in enumerate(keys):
        ax = axs[n // cols, n % cols]
        for i, t in enumerate(trials):
            if key not in t.data.metrics:
                continue
            hist = retry(lambda: client.get_metric_history(t.info.run_id, key), what="read metric history")
            pts = sorted((m.step, m.value) for m in hist)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1, label=t.info.run_name,
                    color=plt.cm.tab20(i % 20))
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    for n in range(len(keys), rows * cols):
        axs[n // cols, n % cols].axis("off")
    handles, labels = axs[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=7,
               bbox_to_anchor=(0.5, -0.02 - 0.02 * math.ceil(len(labels) / 4)))
    fig.tight_layout()
    return _png(fig)


# ---------------------------------------------------------------------------------------------- HTML
CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #ccc;padding:4px 8px}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}td.best{font-weight:bold;background:#e8f4e8}
figure{margin:12px 0}figcaption{font-size:12px;color:#555}img{max-width:100%}.meta{color:#555;font-size:13px}"""


def _natural(text: str) -> tuple:
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def table_html(table: pd.DataFrame) -> str:
    """The aggregated table (evaluation.table.aggregate) as HTML: mean ± seed spread, the best per column bold."""
    specs: list[MetricSpec] = [m for m in table.attrs.get("metrics", []) if not m.detail]
    head = ["Source", "Prompt", "Method", "n"] + [m.label for m in specs]
    out = ["<table class='results'><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for _, row in table.iterrows():
        cells = [f"<td>{html.escape(Path(str(row['source'])).stem)}</td>", f"<td>{html.escape(str(row['prompt']))}</td>",
                 f"<td>{html.escape(str(row['method']))}</td>", f"<td class='num'>{row['n']}</td>"]
        for m in specs:
            mean, std, n = row[f"{m.name}_mean"], row[f"{m.name}_std"], row[f"{m.name}_n"]
            if isinstance(mean, float) and math.isnan(mean):
                text = "–"
            else:
                text = format(mean, m.fmt)
                if not (isinstance(std, float) and math.isnan(std)):
                    text += f" ± {format(std, m.fmt)}"
                if n != row["n"]:
                    text += f" ({n})"
            best = " best" if row[f"{m.name}_best"] else ""
            cells.append(f"<td class='num{best}'>{html.escape(text)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _figure(png: str | None, caption: str, alt: str) -> str:
    if png is None:
        return f"<p class='meta'>{html.escape(caption)}</p>"
    return (f"<figure><img alt='{html.escape(alt)}' src='data:image/png;base64,{png}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def search_section(runs: SweepRuns, tracking: "str | TrackingTarget", tmp: Path) -> list[str]:
    """A multi-objective search's answer (sweeps/pareto.py), when its parent run names a pick: the rule, the
    picked trial and the Pareto-front figure logged beside it."""
    tags = runs.parent.data.tags
    if PICK_TAG not in tags:
        return []
    out = ["<h2>Search: Pareto front and pick</h2>"]
    try:
        local = Path(mlflow_client(tracking).download_artifacts(runs.parent_id, "search", str(tmp)))
        pick = json.loads((local / "pick.json").read_text())
        png = base64.b64encode((local / "pareto.png").read_bytes()).decode() if (local / "pareto.png").is_file() else None
    except Exception as exc:  # noqa: BLE001 - the pick's tags still say which trial it is
        return out + [f"<p class='meta'>picked: {html.escape(tags[PICK_TAG])} (rule {html.escape(tags.get(PICK_RULE_TAG, '?'))}); "
                      f"the search artifacts could not be read ({html.escape(type(exc).__name__)})</p>"]
    values = ", ".join(f"{k} {v:.4g}" for k, v in pick.get("metrics", {}).items())
    out.append(f"<p>picked: <b>{html.escape(str(pick.get('trial')))}</b> ({html.escape(values)}): "
               f"{html.escape(str(pick.get('note', '')))}</p>")
    out.append(_figure(png, "trials, the Pareto front over the search's objectives and the pick", "pareto front"))
    return out


def build_report(experiment: str, tracking: "str | TrackingTarget", parent_run_id: str | None = None) -> str:
    """The report's HTML (self-contained)."""
    runs = load_sweep_runs(experiment, tracking, parent_run_id)
    df = runs_dataframe(experiment, tracking, params=runs.axes)
    df = df[df["parent_run_id"] == runs.parent_id].reset_index(drop=True)
    table = aggregate(df)
    better = {m.key: m.better for m in table.attrs.get("metrics", [])}
    metrics = [m for m in ordered_headlines(set(df.columns)) if m in df]
    parts = [f"<h1>Sweep report: {html.escape(experiment)}</h1>",
             f"<p class='meta'>sweep run {html.escape(runs.parent_id)} · {len(runs.trials)} trial(s) · swept axes: "
             f"{html.escape(', '.join(runs.axes) or '(none)')}</p>",
             "<h2>Table</h2><p class='meta'>mean ± standard deviation over seeds (n runs); the best per prompt in bold "
             "(direction declared by each metric)</p>", table_html(table)]
    with tempfile.TemporaryDirectory() as tmp:
        grids = comparison_grids(runs, tracking, Path(tmp))
        parts += search_section(runs, tracking, Path(tmp) / "search")
    parts.append("<h2>Comparison grids</h2><p class='meta'>per prompt: the frozen source generator first, then each "
                 "trial's adapted generator on the same latents (its final sample grid)</p>")
    parts += [_figure(png, f"prompt: {prompt}", f"grid {prompt}") for prompt, png in grids] or \
        ["<p class='meta'>no sample grids (samples/final.png) on the trials</p>"]
    parts.append("<h2>Headline metrics against the swept axes</h2>")
    parts.append(_figure(metric_vs_axes(df, metrics, runs.axes), "one point per trial, coloured by method",
                         "metrics against axes") if metrics and runs.axes else
                 "<p class='meta'>no swept axis or no headline metric</p>")
    caption, png = trade_off(df, better)
    parts += ["<h2>Trade-off</h2>", _figure(png, caption, "trade-off")]
    parts += ["<h2>Training curves</h2>", _figure(training_curves(runs, tracking),
                                                  f"step metrics, one line per trial (at most {MAX_CURVE_TRIALS})",
                                                  "training curves")]
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(experiment)}: sweep report</title><style>{CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")


def write_report(experiment: str, tracking: "str | TrackingTarget", out: str | Path, *,
                 parent_run_id: str | None = None, log: bool = True) -> Path:
    """Build the report, write it to `out`, and (log=True) log it on the sweep's parent run as report.html."""
    text = build_report(experiment, tracking, parent_run_id)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    if log:
        pid = parent_run_id or load_sweep_runs(experiment, tracking).parent_id
        client = mlflow_client(tracking)
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / REPORT_ARTIFACT
            copy.write_text(text, encoding="utf-8")
            retry(lambda: client.log_artifact(pid, str(copy)), what="log the sweep report")
    return out
