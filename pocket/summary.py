"""`python -m pocket summary`: the pocket table condensed to what the paper's claims are about.

Reads a pocket sweep's trial runs from MLflow (evaluation's `runs_dataframe`, the same rows the full table is
built from), keeps the newest sweep run of the experiment (or `--parent RUN_ID`), and prints two markdown
tables:
  1. per prompt kind (short / long) and method: each metric averaged over the kind's prompts within a seed,
     then mean +- std over seeds (so the spread is seed-to-seed, not prompt-to-prompt);
  2. per prompt and method: prompt accuracy / preservation / ground-truth FID, mean over seeds, next to the
     unadapted generator (`frozen G`: the starting point every method moves from; its preservation is 1);
  3. when metrics failed on some runs (tags `eval.error.<metric>`, evaluation.runner), each missing metric
     with its reason and where it is missing (they never hide silently as a "-").
A prompt outside the catalogue gets the kind its parsed attributes give (pocket.prompts.kind_of: short = one
or two attributes changed, long = three or more, as in the catalogue); a prompt the pocket world cannot render
(which the pocket metrics refuse) is grouped as kind `other`.
"""
from __future__ import annotations

import pandas as pd
import torch

from evaluation.table import runs_dataframe
from tracking import TrackingTarget
from trainables.generators import load_generator

from . import refs
from . import world as W
from .common import STYLEGAN_PATH
from .metrics import accuracy_of, judge_feature_array, judge_fid, judge_images, load_folder
from .prompts import PromptError, resolve

METRICS = [("eval/pocket/prompt_accuracy", "prompt acc ↑", ".2f"),
           ("eval/pocket/preservation", "preservation ↑", ".2f"),
           ("eval/pocket/fid_gt", "FID to ground truth ↓", ".1f"),
           ("eval/pocket/fid_source", "FID to source", ".1f"),
           ("eval/clip_score", "CLIP score ↑", ".1f"),
           ("eval/feature_diversity", "feature div. ↑", ".3f")]


def load_runs(experiment: str, tracking_uri: "str | TrackingTarget | None" = None, parent: str | None = None,
              params: tuple[str, ...] = (), label_params: tuple[str, ...] = ()) -> pd.DataFrame:
    """The newest sweep's trial runs; `label_params` are shown in the method label ('Fusion (reg.x=0.3)')."""
    runs = runs_dataframe(experiment, TrackingTarget.of(tracking_uri).uri, extra_params=label_params,
                          params=params)   # None: the local store ./mlruns, where sweeps log by default
    if runs.empty:
        raise SystemExit(f"experiment {experiment!r} has no trial runs; run `python -m sweeps run "
                         f"sweeps/pocket/table.yaml` first (or pass --tracking-uri)")
    if parent is None and runs["parent_run_id"].notna().any():    # newest sweep: parent of the newest trial
        parent = runs.dropna(subset=["parent_run_id"]).sort_values("start_time")["parent_run_id"].iloc[-1]
    if parent is not None:
        sweeps = sorted(runs["parent_run_id"].dropna().unique())
        runs = runs[runs["parent_run_id"] == parent]
        if runs.empty:
            raise SystemExit(f"--parent {parent}: no trial runs of experiment {experiment!r} belong to that sweep "
                             f"run; its sweep runs are: {', '.join(sweeps) or 'none'}")
    runs = runs.copy()
    runs["kind"] = runs["prompt"].map(prompt_kind)
    return runs


def prompt_kind(prompt: str) -> str:
    """The kind (source / short / long) of a prompt: the catalogue's, else from its parsed attributes;
    `other` for a prompt the pocket world cannot render."""
    try:
        return resolve(prompt).kind
    except PromptError:
        return "other"


def _fmt(values: pd.Series, fmt: str) -> str:
    values = values.dropna()
    if values.empty:
        return "-"
    if len(values) == 1:
        return format(values.iloc[0], fmt)
    return f"{format(values.mean(), fmt)} ± {format(values.std(ddof=1), fmt)}"


def by_kind(runs: pd.DataFrame) -> str:
    metrics = [m for m in METRICS if m[0] in runs.columns]
    head = "| prompts | method | seeds | " + " | ".join(t for _, t, _ in metrics) + " |"
    lines = [head, "|" + "---|" * (3 + len(metrics))]
    for (kind, method), g in runs.groupby(["kind", "method"], sort=True):
        per_seed = g.groupby("seed")[[k for k, _, _ in metrics]].mean()
        cells = [_fmt(per_seed[k], f) for k, _, f in metrics]
        n_prompts = g["prompt"].nunique()
        lines.append(f"| {kind} ({n_prompts}) | {method} | {len(per_seed)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def frozen_baseline(prompts, n: int = 512, seed: int = 0) -> dict[str, tuple[float, float]]:
    """(prompt accuracy, FID to the prompt's ground truth) of the unadapted pocket-StyleGAN2's samples."""
    g = load_generator(STYLEGAN_PATH)
    z = torch.randn(n, g.cfg.style_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        x01 = (g(z, noise_mode="const").clamp(-1, 1) + 1) / 2
    pred, feats = judge_images(x01), judge_feature_array(x01)
    return {p: (accuracy_of(pred, p)["pocket/prompt_accuracy"],
                judge_fid(feats, judge_feature_array(load_folder(refs.reference_dir(p)))))
            for p in prompts if prompt_kind(p) != "other"}   # the judge scores prompts the world can render


def by_prompt(runs: pd.DataFrame, frozen: dict[str, tuple[float, float]] | None = None) -> str:
    methods = sorted(runs["method"].unique(), key=lambda m: (not m.startswith("NADA"), m.count("+"), m))
    first = ["frozen G"] if frozen else []
    lines = ["| prompt | " + " | ".join(first + methods) + " |", "|" + "---|" * (1 + len(first) + len(methods))]
    order = {p.text: i for i, p in enumerate(W.CATALOGUE)}
    for prompt in sorted(runs["prompt"].unique(), key=lambda p: order.get(p, 99)):
        cells = (["{:.2f} / 1.00 / {:.0f}".format(*frozen[prompt]) if prompt in frozen else "-"]
                 if frozen else [])
        for method in methods:
            g = runs[(runs["prompt"] == prompt) & (runs["method"] == method)]
            vals = [g[k].mean() if k in g else float("nan") for k, _, _ in METRICS[:3]]
            cells.append(" / ".join("-" if v != v else format(v, f) for v, f in zip(vals, (".2f", ".2f", ".0f")))
                         if len(g) else "-")   # a metric missing on every run: "-" (reason listed below)
        lines.append(f"| {prompt} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def missing_metrics(runs: pd.DataFrame) -> str:
    """Markdown lines: each failed metric with its reason and the (prompt, method) rows it is missing from."""
    if "eval_errors" not in runs:
        return ""
    where: dict[tuple[str, str], list[str]] = {}
    for _, row in runs.iterrows():
        for unit, why in (row["eval_errors"] if isinstance(row["eval_errors"], dict) else {}).items():
            where.setdefault((unit, why), []).append(f"{row['prompt']} / {row['method']} / seed {row['seed']}")
    if not where:
        return ""
    lines = ["missing metrics (the reason recorded on the runs; fix it, then `python -m evaluation run "
             "--experiment NAME --only-missing`):", ""]
    for (unit, why), rows in sorted(where.items()):
        lines.append(f"- {unit} missing in {len(rows)} run(s): {why}")
        lines.append("  runs: " + "; ".join(rows[:6]) + (f"; ... ({len(rows) - 6} more)" if len(rows) > 6 else ""))
    return "\n".join(lines)


def summary(experiment: str, tracking_uri: "str | TrackingTarget | None" = None, parent: str | None = None,
            with_frozen: bool = True, label_params: tuple[str, ...] = ()) -> str:
    runs = load_runs(experiment, tracking_uri, parent, label_params=label_params)
    frozen = frozen_baseline(sorted(runs["prompt"].unique())) if with_frozen else None
    missing = missing_metrics(runs)
    return (f"{len(runs)} trial runs, sweep run {runs['parent_run_id'].iloc[0]}\n\n" + by_kind(runs)
            + "\n\nper prompt: prompt accuracy / preservation / FID to ground truth (mean over seeds)\n\n"
            + by_prompt(runs, frozen) + (f"\n\n{missing}" if missing else ""))
