"""`python -m pocket lora-report`: the pocket LoRA experiment's table (sweeps/pocket/lora.yaml), one row per arm.

Reads the newest sweep of the experiment (as `python -m pocket figures` does) and prints, per configuration (the
prompt and whether the critic carries a LoRA), the mean and the sample standard deviation over seeds of the
look metrics (pocket.metrics:LookAccuracy) and the judge-feature diversity, as a Markdown table.
"""
from __future__ import annotations

import statistics

from tracking import TrackingTarget

from .figures import read_trials

COLUMNS = [("look_accuracy", "eval/pocket/look_accuracy"), ("shape", "eval/pocket/look_acc_shape"),
           ("colour", "eval/pocket/look_acc_colour"), ("background", "eval/pocket/look_acc_background"),
           ("pattern", "eval/pocket/look_acc_pattern"), ("preservation (size)", "eval/pocket/look_preservation"),
           ("FID to the look (judge)", "eval/pocket/look_fid_gt")]


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def report(experiment: str = "pocket-lora", tracking_uri: str | None = None, parent: str | None = None) -> str:
    parent, trials = read_trials(experiment, TrackingTarget.of(tracking_uri), parent)
    arms: dict[tuple[str, str], list] = {}
    for t in trials:
        if t.status != "FINISHED":
            continue
        lora = t.tags.get("guidance_model", "").partition(" + ")[2] or "base critic"
        arms.setdefault((t.prompt, lora), []).append(t)
    head = ["prompt", "critic", "seeds", *(name for name, _ in COLUMNS)]
    lines = [f"sweep run {parent}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (prompt, lora), runs in sorted(arms.items(), key=lambda kv: kv[0][1] == "base critic"):
        cells = [_cell([r.metrics[key] for r in runs if key in r.metrics]) for _, key in COLUMNS]
        lines.append(f"| {prompt} | {lora} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
