"""Pocket world CLI.

    python -m pocket build [--only STAGE ...] [--serial]   train the stand-in models (fixed seeds and steps)
    python -m pocket check [--only PART ...]                measure the quality bars -> pocket/models/build.json
    python -m pocket refs [--n N] [--seed S] [--out DIR]    write ground-truth reference folders (FID)
    python -m pocket prompts                                the prompt catalogue and each prompt's attributes
    python -m pocket probe [--prompts P ...] [--iterations N]  quick SDS/NADA settings experiment (judge-read)
    python -m pocket summary [--experiment pocket-table]   the pocket table condensed (short/long, per prompt)
    python -m pocket figures [--experiment pocket-table] [--seed 0] [--out DIR]   one comparison PNG per prompt
    python -m pocket search-report [--search EXP ...] [--fixed EXP]   CLIP-tuned settings vs ground truth
    python -m pocket lora [--look L] [--phrase P] [--images N] [--out DIR]   personalised critic: a LoRA on pocket-SD
    python -m pocket lora-report [--experiment pocket-lora]   that experiment's table (LoRA + phrase vs words)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from trainables.config_io import parse_override

# `python -m pocket lora`'s options: fields of pocket/lora.py's LoraTrainConfig (unset: its defaults)
LORA_OPTIONS = {"look": str, "phrase": str, "images": int, "steps": int, "lr": float, "rank": int, "seed": int,
                "out": Path}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pocket", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="train the stand-in models")
    b.add_argument("--only", nargs="+", help="stages: judge vae pool unet clip stylegan2 eg3d stylegan3")
    b.add_argument("--serial", action="store_true", help="one process, stages in order")
    c = sub.add_parser("check", help="measure the quality bars")
    c.add_argument("--only", nargs="+", help="parts: judge clip vae sd stylegan2")
    r = sub.add_parser("refs", help="write ground-truth reference image folders")
    r.add_argument("--n", type=int, default=None)
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--out", type=Path, default=None)
    sub.add_parser("prompts", help="print the prompt catalogue")
    pr = sub.add_parser("probe", help="quick SDS / NADA settings experiment on the pocket models")
    pr.add_argument("--prompts", nargs="+", default=None)
    pr.add_argument("--iterations", type=int, default=150)
    pr.add_argument("--methods", nargs="+", default=["fusion", "nada"])
    pr.add_argument("--cfg-scales", nargs="+", type=float, default=[7.5, 20.0, 100.0])
    pr.add_argument("--lrs", nargs="+", type=float, default=[0.002, 0.008])
    pr.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra config overrides for every run, e.g. guidance.t_max=300 train.batch_size=4")
    pr.add_argument("--fresh", action="store_true", help="start a new probe record (after rebuilding pocket-SD)")
    pr.add_argument("--show", action="store_true", help="print the recorded probe rows as a markdown table; run nothing")
    sm = sub.add_parser("summary", help="condense a pocket sweep's MLflow results (short vs long prompts)")
    sm.add_argument("--experiment", default="pocket-table")
    sm.add_argument("--tracking-uri", default=None, help="default: the project's local MLflow store")
    sm.add_argument("--parent", default=None, help="sweep run id (default: the newest sweep of the experiment)")
    sm.add_argument("--no-frozen", action="store_true", help="skip the unadapted generator's column")
    sm.add_argument("--label-params", nargs="+", default=[], metavar="PARAM",
                    help="config fields to show in the method labels, e.g. reg.reconstruction.weight")
    fg = sub.add_parser("figures", help="one comparison PNG per prompt of a pocket sweep (frozen row first)")
    fg.add_argument("--experiment", default="pocket-table")
    fg.add_argument("--seed", type=int, default=0, help="the trial seed each configuration row shows")
    fg.add_argument("--out", type=Path, default=None, help="default: docs/figures/pocket/EXPERIMENT")
    fg.add_argument("--tracking-uri", default=None, help="default: the project's local MLflow store")
    fg.add_argument("--parent", default=None, help="sweep run id (default: the newest sweep of the experiment)")
    fg.add_argument("--min-cell", type=int, default=64, help="enlarge cells to at least this many pixels")
    fg.add_argument("--no-frozen", action="store_true", help="no judge metrics on the frozen row (skips scoring)")
    fg.add_argument("--no-index", action="store_true", help="skip index.png (all prompts, one strip each)")
    pc = sub.add_parser("preservation-check", help="eval/preservation/* vs the judge's preservation (Spearman)")
    pc.add_argument("--experiment", default="pocket-table-v2")
    pc.add_argument("--tracking-uri", default=None, help="default: the project's local MLflow store")
    sr = sub.add_parser("search-report", help="CLIP-tuned settings vs ground truth (settings-search sweeps)")
    sr.add_argument("--search", nargs="+", default=["pocket-search-square", "pocket-search-red-circle",
                                                    "pocket-search-long-triangle"], help="search experiments")
    sr.add_argument("--fixed", default="pocket-table-v2", help="the experiment with the fixed settings ('' = none)")
    sr.add_argument("--clip-only", nargs="*", default=[], help="CLIP-only searches to compare picks with, by prompt")
    sr.add_argument("--tracking-uri", default=None, help="default: the project's local MLflow store")
    lo = sub.add_parser("lora", help="train a DreamBooth-style LoRA on pocket-SD binding a look to a new phrase")
    for name, kind in LORA_OPTIONS.items():
        lo.add_argument(f"--{name}", type=kind, default=None, help="default: pocket/lora.py LoraTrainConfig")
    lr_ = sub.add_parser("lora-report", help="the pocket LoRA experiment's table (sweeps/pocket/lora.yaml)")
    lr_.add_argument("--experiment", default="pocket-lora")
    lr_.add_argument("--tracking-uri", default=None, help="default: the project's local MLflow store")
    lr_.add_argument("--parent", default=None, help="sweep run id (default: the newest sweep of the experiment)")
    args = ap.parse_args(argv)

    if args.cmd == "build":
        from .build import build  # late: a subcommand loads only its own stack (torch ~2 s, diffusers ~5 s)

        build(only=args.only, parallel=not args.serial)
    elif args.cmd == "check":
        from .check import run  # late: a subcommand loads only its own stack (torch ~2 s, diffusers ~5 s)

        print(json.dumps(run(args.only), indent=2))
    elif args.cmd == "refs":
        from . import refs  # late: a subcommand loads only its own stack (torch ~2 s, diffusers ~5 s)

        paths = refs.write_all(n=args.n or refs.REF_COUNT, seed=args.seed if args.seed is not None else refs.REF_SEED,
                               root=args.out)
        for prompt, path in paths.items():
            print(f"{path}\t{prompt}")
    elif args.cmd == "probe" and args.show:
        from .common import BUILD_RECORD  # late: a subcommand loads only its own stack (torch ~2 s, diffusers ~5 s)
        from .probe import markdown_table  # late: a subcommand loads only its own stack (torch ~2 s, diffusers ~5 s)

        print(markdown_table(json.loads(BUILD_RECORD.read_text()).get("probe", {}).get("rows", [])))
    elif args.cmd == "probe":
        from .probe import run  # late: a subcommand loads only its own stack (torch ~2 s, diffusers ~5 s)

        over = {".".join(key): value for key, value in map(parse_override, args.set)}
        run(args.prompts, args.iterations, tuple(args.methods), tuple(args.cfg_scales), tuple(args.lrs),
            fresh=args.fresh, **over)
    elif args.cmd == "summary":
        from .summary import summary  # late: a subcommand loads only its own stack (torch ~2 s, diffusers ~5 s)

        try:
            print(summary(args.experiment, args.tracking_uri, args.parent, with_frozen=not args.no_frozen,
                          label_params=tuple(args.label_params)))
        except (ValueError, KeyError) as exc:     # unknown experiment; a prompt outside the pocket catalogue
            raise SystemExit(f"error: {exc.args[0] if exc.args else exc}") from None
    elif args.cmd == "figures":
        from .figures import FigureConfig, write_figures  # late: a subcommand loads only its own stack (torch ~2 s)

        try:
            result = write_figures(FigureConfig(
                experiment=args.experiment, tracking_uri=args.tracking_uri, parent=args.parent, seed=args.seed,
                out=args.out, min_cell=args.min_cell, frozen_metrics=not args.no_frozen, index=not args.no_index))
        except ValueError as exc:     # unknown experiment; a knob out of range (pydantic names the field)
            raise SystemExit(f"error: {exc.args[0] if exc.args else exc}") from None
        for path in result.paths:
            print(path)
    elif args.cmd == "preservation-check":
        from .preservation_check import report as preservation_report  # late: a subcommand loads only its own stack

        print(preservation_report(args.experiment, args.tracking_uri))
    elif args.cmd == "search-report":
        from .search_report import report  # late: a subcommand loads only its own stack (torch ~2 s)

        print(report(args.search, args.fixed or None, args.tracking_uri, args.clip_only))
    elif args.cmd == "lora":
        from .lora import LoraTrainConfig, train_lora  # late: a subcommand loads only its own stack (diffusers ~5 s)

        given = {k: v for k, v in vars(args).items() if k in LORA_OPTIONS and v is not None}
        print(train_lora(LoraTrainConfig(**given)))
    elif args.cmd == "lora-report":
        from .lora_report import report  # late: a subcommand loads only its own stack (mlflow ~2 s)

        print(report(args.experiment, args.tracking_uri, args.parent))
    elif args.cmd == "prompts":
        from .world import CATALOGUE  # late: a subcommand loads only its own stack (torch ~2 s, diffusers ~5 s)

        for p in CATALOGUE:
            print(json.dumps({"prompt": p.text, "kind": p.kind, "spec": p.spec, "changed": p.changed}))


if __name__ == "__main__":
    main()
