"""`python -m pocket search-report`: does tuning on CLIP score find what the ground truth prefers?

A settings search (sweeps/pocket/search_*.yaml) tunes CFG, lr and the reconstruction weight for one prompt with
Optuna on `eval/clip_score`, what a user without ground truth would optimise. Every trial also carries the pocket
world's ground truth (prompt accuracy, preservation, FID to the prompt's ground-truth images). For each search
experiment this prints:
  1. its trials, best CLIP score first, with the searched settings and every ground-truth metric;
  2. the Spearman rank correlation of CLIP score with each ground-truth metric over the trials (sign-aligned:
     +1 = CLIP ranks trials exactly as the ground truth does), and where the CLIP-chosen trial ranks by
     ground-truth FID;
  3. the CLIP-chosen settings next to the fixed settings of table v2 on the same prompt (Fusion + reconstruction
     0.1 at CFG 7.5, lr 0.002; mean +- std over its seeds, and its seed 0, the seed the search ran);
  4. for a search with a pick rule (sweeps/pareto.py: e.g. the highest CLIP score with source preservation >= p),
     the picked trial's rank by ground-truth FID next to the CLIP-only choice's: within the same search, and,
     with --clip-only, the CLIP-only search of the same prompt (the earlier round).
"""
from __future__ import annotations

import pandas as pd

from tracking import PICK_RUN_TAG, TrackingTarget, mlflow_client

from .summary import load_runs

SEARCHED = ("guidance.cfg_scale", "optim.lr", "reg.reconstruction.weight")
# ground-truth metric -> (column title, format, +1 if higher is better)
GROUND_TRUTH = {"eval/pocket/prompt_accuracy": ("prompt acc", ".2f", +1),
                "eval/pocket/preservation": ("preservation", ".2f", +1),
                "eval/pocket/fid_gt": ("FID to ground truth", ".1f", -1)}
CLIP = "eval/clip_score"
FIXED_METHOD = "Fusion + reconstruction"          # table v2's paper SDS with reconstruction 0.1


def spearman(a: pd.Series, b: pd.Series) -> float:
    """Spearman's rank correlation: Pearson's correlation of the average ranks (ties share their mean rank)."""
    ra, rb = a.rank(method="average"), b.rank(method="average")
    return float(ra.corr(rb))


def search_runs(experiment: str, tracking_uri: "str | TrackingTarget | None" = None) -> pd.DataFrame:
    runs = load_runs(experiment, tracking_uri, params=SEARCHED)
    runs = runs.dropna(subset=[CLIP])
    if runs.empty:
        raise SystemExit(f"experiment {experiment!r}: no trial with {CLIP} (has the search finished?)")
    return runs.sort_values(CLIP, ascending=False).reset_index(drop=True)


def agreement(runs: pd.DataFrame) -> dict[str, float]:
    """Sign-aligned Spearman correlation of CLIP score with each ground-truth metric (+1 = same order); NaN where
    the metric is the same on every trial (no order to agree with)."""
    return {m: sign * spearman(runs[CLIP], runs[m]) for m, (_, _, sign) in GROUND_TRUTH.items() if m in runs}


def _agreement_text(runs: pd.DataFrame, m: str, v: float) -> str:
    if v == v:
        return f"{GROUND_TRUTH[m][0]} {v:+.2f}"
    return f"{GROUND_TRUTH[m][0]} n/a (the same {format(runs[m].iloc[0], GROUND_TRUTH[m][1])} on every trial)"


def trials_table(runs: pd.DataFrame) -> str:
    cols = [f"param/{p}" for p in SEARCHED]
    gt = [m for m in GROUND_TRUTH if m in runs]
    lines = ["| CFG | lr | reconstruction | CLIP score | " + " | ".join(GROUND_TRUTH[m][0] for m in gt) + " |",
             "|" + "---|" * (4 + len(gt))]
    for _, r in runs.iterrows():
        cells = [f"{r[cols[0]]:.2f}", f"{r[cols[1]]:.4f}", f"{r[cols[2]]:.3f}", f"{r[CLIP]:.1f}"]
        cells += [format(r[m], GROUND_TRUTH[m][1]) for m in gt]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(values: pd.Series, fmt: str) -> str:
    values = values.dropna()
    if values.empty:
        return "-"
    return format(values.mean(), fmt) + (f" ± {format(values.std(ddof=1), fmt)}" if len(values) > 1 else "")


def versus_fixed(runs: pd.DataFrame, fixed: pd.DataFrame | None) -> str:
    best = runs.iloc[0]
    metrics = [CLIP, *[m for m in GROUND_TRUTH if m in runs]]
    fmts = {CLIP: ".1f", **{m: f for m, (_, f, _) in GROUND_TRUTH.items()}}
    titles = {CLIP: "CLIP score", **{m: t for m, (t, _, _) in GROUND_TRUTH.items()}}
    lines = ["| settings | " + " | ".join(titles[m] for m in metrics) + " |", "|" + "---|" * (1 + len(metrics))]
    chosen = ", ".join(f"{p.split('.')[-1]} {best[f'param/{p}']:.4g}" for p in SEARCHED)
    lines.append(f"| CLIP-chosen ({chosen}), seed {best['seed']} | "
                 + " | ".join(format(best[m], fmts[m]) for m in metrics) + " |")
    if fixed is not None:
        prompt = best["prompt"]
        g = fixed[(fixed["prompt"] == prompt) & (fixed["method"] == FIXED_METHOD)]
        if g.empty:
            lines.append(f"| fixed: no {FIXED_METHOD!r} runs of this prompt in the fixed experiment | "
                         + " | ".join("-" for _ in metrics) + " |")
        else:
            s0 = g[g["seed"].astype(str) == str(best["seed"])]
            lines.append(f"| fixed (table v2: CFG 7.5, lr 0.002, reconstruction 0.1), seed {best['seed']} | "
                         + " | ".join(_fmt(s0[m], fmts[m]) if m in s0 else "-" for m in metrics) + " |")
            lines.append(f"| fixed, {len(g)} seeds | "
                         + " | ".join(_fmt(g[m], fmts[m]) if m in g else "-" for m in metrics) + " |")
    return "\n".join(lines)


FID_GT = "eval/pocket/fid_gt"


def gt_rank(runs: pd.DataFrame, row: int) -> int:
    """Rank (1 = best, ties share the best rank) of trial `row` by ground-truth FID within its search."""
    return int(runs[FID_GT].rank(method="min").iloc[row])


def picked_row(runs: pd.DataFrame, tracking_uri: "str | TrackingTarget | None") -> int | None:
    """The row of the trial the search's pick rule named (its parent run's `sweep.pick_run_id`), else None."""
    parents = runs["parent_run_id"].dropna().unique()
    if len(parents) != 1:
        return None
    tags = mlflow_client(TrackingTarget.of(tracking_uri)).get_run(parents[0]).data.tags
    hit = runs.index[runs["run_id"] == tags.get(PICK_RUN_TAG)]
    return int(hit[0]) if len(hit) else None


def pick_line(runs: pd.DataFrame, tracking_uri, clip_only: dict[str, pd.DataFrame]) -> str | None:
    """'pick ranks r/n by ground-truth FID; the CLIP-only choice r'/n (...)' for a search with a pick rule."""
    if FID_GT not in runs:
        return None
    row = picked_row(runs, tracking_uri)
    if row is None:
        return None
    n = len(runs)
    text = (f"preservation-aware pick ({runs.loc[row, 'run_name']}): ranks "
            f"{gt_rank(runs, row)}/{n} by FID to ground truth; the CLIP-only choice of the same search (row 1 "
            f"above) ranks {gt_rank(runs, 0)}/{n}")
    other = clip_only.get(str(runs["prompt"].iloc[0]))
    if other is not None and FID_GT in other:
        text += f"; the CLIP-only search of this prompt chose a trial ranked {gt_rank(other, 0)}/{len(other)}"
    return text


def report(experiments: list[str], fixed_experiment: str | None = None, tracking_uri: "str | TrackingTarget | None" = None,
           clip_only_experiments: list[str] | None = None) -> str:
    fixed = load_runs(fixed_experiment, tracking_uri) if fixed_experiment else None
    clip_only = {}
    for name in clip_only_experiments or []:
        other = search_runs(name, tracking_uri)
        clip_only[str(other["prompt"].iloc[0])] = other
    out = []
    for name in experiments:
        runs = search_runs(name, tracking_uri)
        agree = agreement(runs)
        rank0 = gt_rank(runs, 0) if FID_GT in runs else None
        out.append(f"### {name}: '{runs['prompt'].iloc[0]}' ({len(runs)} trials)\n")
        out.append(trials_table(runs) + "\n")
        out.append("CLIP score vs ground truth, Spearman (sign-aligned, +1 = same order): "
                   + ", ".join(_agreement_text(runs, m, v) for m, v in agree.items())
                   + (f"; the CLIP-chosen trial ranks {rank0} of {len(runs)} by FID to ground truth" if rank0 else "")
                   + "\n")
        out.append(versus_fixed(runs, fixed) + "\n")
        line = pick_line(runs, tracking_uri, clip_only)
        if line:
            out.append(line + "\n")
    return "\n".join(out)
