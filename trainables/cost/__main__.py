"""`python -m trainables.cost --config FILE [--set k=v ...] [--gpu H100 ...] [--json]`: what one run costs.

Traces one adaptation step of the config under fake tensors (no GPU, no weights; docs/benchmarks.md) and
prints FLOPs per component, the peak of live tensor memory and the roofline time per step and per run on
named GPUs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

from trainables.config_io import ConfigError, load_config
from trainables.cost.gpus import GPUS
from trainables.cost.model import CostReport, estimate


def format_report(r: CostReport) -> str:
    lines = [f"cost of one step of {r.config_name!r} ({r.precision} critics, {r.iterations} iterations)",
             "", "| component | TFLOP |", "|---|---|"]
    for key, value in sorted(r.by_component.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {key} | {value / 1e12:.3f} |")
    lines += [f"| **step** | **{r.step_flops / 1e12:.3f}** |", "",
              f"peak live tensors: {r.peak_bytes / 1e9:.2f} GB (during {r.peak_at}); weights {r.weight_bytes / 1e9:.2f} GB",
              "", "| GPU | step ms (roofline) | run h | implied MFU |", "|---|---|---|---|"]
    for name in r.step_seconds_by_gpu:
        lines.append(f"| {name} | {r.step_seconds(name) * 1e3:.1f} | {r.run_seconds(name) / 3600:.3f} | "
                     f"{r.mfu(name):.0%} |")
    if r.assumptions:
        lines += ["", "assumed: " + "; ".join(r.assumptions)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trainables.cost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="an AdaptConfig YAML file")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override (repeatable)")
    ap.add_argument("--gpu", action="append", choices=list(GPUS), help="GPUs to estimate for (default: all)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")     # architectures only: never download for an estimate
    try:
        cfg = load_config(args.config, args.set)
        report = estimate(cfg, gpus=tuple(args.gpu or GPUS))
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(report), indent=1) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
