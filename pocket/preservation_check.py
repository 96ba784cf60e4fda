"""`python -m pocket preservation-check`: do the platform's preservation metrics rank adapted generators the way the
pocket world's ground truth does?

The judge's attribute preservation (`eval/pocket/preservation`: the share of the source image's attributes the
prompt does not mention that the adapted image keeps, per latent) is ground truth no real domain has. The platform's
`eval/preservation/*` (LPIPS, CLIP-image cosine, feature cosine between the source and adapted image of the same z)
are computable anywhere. Over the trials of a sweep this prints each one's Spearman rank correlation with the
ground truth, sign-aligned (+1 = same order; LPIPS is a distance, so its sign is flipped), over all trials and
per prompt kind (short / long) and per method.
"""
from __future__ import annotations

import pandas as pd

from tracking import TrackingTarget

from .search_report import spearman
from .summary import load_runs

GROUND_TRUTH = "eval/pocket/preservation"
MIN_TRIALS = 5   # a rank correlation over fewer trials is noise
# metric -> (label, sign: +1 when higher means more preserved)
PRESERVATION = {"eval/preservation/clip": ("CLIP-image cosine", +1),
                "eval/preservation/features": ("judge-feature cosine", +1),
                "eval/preservation/lpips": ("LPIPS (sign flipped)", -1)}


def correlations(runs: pd.DataFrame) -> dict[str, tuple[float, int]]:
    """{metric: (sign-aligned Spearman with the ground truth, trials)} over the rows holding both."""
    out = {}
    for m, (_, sign) in PRESERVATION.items():
        if m in runs:
            both = runs.dropna(subset=[m, GROUND_TRUTH])
            out[m] = (sign * spearman(both[m], both[GROUND_TRUTH]) if len(both) > 2 else float("nan"), len(both))
    return out


def _row(title: str, runs: pd.DataFrame, metrics: list[str]) -> str:
    corr = correlations(runs)
    return f"| {title} | " + " | ".join(f"{corr[m][0]:+.2f} ({corr[m][1]})" for m in metrics) + " |"


def report(experiment: str, tracking_uri: "str | TrackingTarget | None" = None) -> str:
    runs = load_runs(experiment, tracking_uri)
    if GROUND_TRUTH not in runs:
        raise SystemExit(f"experiment {experiment!r}: no trial carries {GROUND_TRUTH} (a pocket sweep with "
                         f"pocket.metrics:attribute_preservation)")
    metrics = [m for m in PRESERVATION if m in runs and runs[m].notna().any()]
    if not metrics:
        raise SystemExit(f"experiment {experiment!r}: no trial carries eval/preservation/* yet: evaluate them with "
                         f"`python -m evaluation run --experiment {experiment} --only-missing --config EVAL.yaml`")
    lines = [f"Spearman with the judge's attribute preservation, sign-aligned (+1 = same order), (trials): "
             f"experiment {experiment}", "",
             "| trials | " + " | ".join(PRESERVATION[m][0] for m in metrics) + " |", "|" + "---|" * (1 + len(metrics))]
    lines.append(_row("all", runs, metrics))
    groups = [(f"{kind} prompts", g) for kind, g in runs.groupby("kind")]
    groups += [(f"'{prompt}'", g) for prompt, g in runs.groupby("prompt")]
    groups += [(str(method), g) for method, g in runs.groupby("method")]
    small = [title for title, g in groups if g[GROUND_TRUTH].notna().sum() < MIN_TRIALS]
    lines += [_row(title, g, metrics) for title, g in groups if title not in small]
    if small:
        lines += ["", f"(groups of fewer than {MIN_TRIALS} trials left out: {', '.join(small)})"]
    return "\n".join(lines)
