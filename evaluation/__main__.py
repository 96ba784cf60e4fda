"""`python -m evaluation run|table|report|sample|reference` -- see docs/evaluation.md."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tracking import TrackingTarget

from .config import load_eval_config


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="EvalConfig YAML (optionally under a top-level `eval:` key)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a dotted EvalConfig field, e.g. --set fid.reference=/data/afhq_dog")


def _tracking_uri(args) -> str:
    """--tracking-uri > $MLFLOW_TRACKING_URI > the local store (tracking.TrackingTarget's precedence, read directly)."""
    return TrackingTarget.resolve(cli=args.tracking_uri).backend_uri


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", help="evaluate the finished runs of an experiment (or one run / generator)")
    target = run.add_mutually_exclusive_group(required=True)
    target.add_argument("--experiment", help="MLflow experiment (= sweep name)")
    target.add_argument("--run-id", help="one MLflow run")
    target.add_argument("--generator", help="one generator checkpoint (needs --prompt; logs to --log-to)")
    run.add_argument("--prompt", help="prompt for the CLIP score (default: the run's)")
    run.add_argument("--log-to", help="with --generator: MLflow run id to log the metrics to")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///./mlruns/mlflow.db)")
    run.add_argument("--only-missing", action="store_true", help="skip runs that already have every configured metric")
    _add_config_args(run)

    table = sub.add_parser("table", help="the comparison table of an experiment")
    table.add_argument("--experiment", required=True)
    table.add_argument("--tracking-uri")
    table.add_argument("--format", choices=["md", "latex", "csv"], default="md")
    table.add_argument("--out", help="write the table here instead of stdout")
    table.add_argument("--no-log", action="store_true", help="do not log table/figure to the parent run")
    table.add_argument("--by", action="append", default=[], metavar="PARAM",
                       help="also split method variants by this param (e.g. guidance.cfg_scale)")
    table.add_argument("--metric", action="append", default=[], metavar="KEY:min|max",
                       help="mark the best of a plugin metric, e.g. eval/prompt_accuracy:max")

    report = sub.add_parser("report", help="the sweep report: one self-contained HTML file (table, grids, plots)")
    report.add_argument("--experiment", required=True, help="MLflow experiment (= sweep name)")
    report.add_argument("--out", default=None, help="where to write it (default: <experiment>-report.html)")
    report.add_argument("--tracking-uri")
    report.add_argument("--parent", default=None, metavar="RUN_ID",
                        help="the sweep run to report on (default: the experiment's newest)")
    report.add_argument("--no-log", action="store_true", help="do not log report.html on the sweep's parent run")

    sample = sub.add_parser("sample", help="sample a generator with the fixed latents (PNG + manifest)")
    sample.add_argument("--generator", required=True)
    sample.add_argument("--out", required=True)
    _add_config_args(sample)

    ref = sub.add_parser("reference", help="precompute reference statistics (.npz) for fid.reference")
    ref.add_argument("--folder", required=True)
    ref.add_argument("--out", required=True)
    _add_config_args(ref)

    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except FileNotFoundError as exc:   # missing weights / references / checkpoints (preflight): the message says what to do
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _dispatch(args) -> int:
    if args.cmd == "table":
        from .table import MetricSpec, log_table, render, table_dataframe  # late: a CLI error answers without torch (~2 s)

        extra = []
        for item in args.metric:
            key, _, better = item.partition(":")
            name = key.removeprefix("eval/").replace("/", "_")
            extra.append(MetricSpec(key, name, key.removeprefix("eval/"), better or "max"))
        uri = _tracking_uri(args)
        df = table_dataframe(args.experiment, uri, extra_params=args.by, extra_metrics=extra)
        text = render(df, args.format)
        if args.out:
            Path(args.out).write_text(text)
            print(f"wrote {args.out}")
        else:
            sys.stdout.write(text)
        if not args.no_log:
            logged = log_table(args.experiment, uri, extra_params=args.by, extra_metrics=extra)
            if logged:
                print(f"logged table/ artifacts to parent run(s): {', '.join(logged)}", file=sys.stderr)
            else:
                print("no parent run found: table not logged", file=sys.stderr)
        return 0

    if args.cmd == "report":
        from .report import write_report  # late: a CLI error answers without pandas/matplotlib (~2 s)

        out = args.out or f"{args.experiment}-report.html"
        try:
            path = write_report(args.experiment, _tracking_uri(args), out, parent_run_id=args.parent,
                                log=not args.no_log)
        except ValueError as exc:   # no such experiment / sweep run: the message says what to pass
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {path}" + ("" if args.no_log else " (and logged it on the sweep's parent run as report.html)"))
        return 0

    cfg = load_eval_config(args.config, args.overrides)
    if args.cmd == "run":
        from .preflight import check_evaluation  # late: a CLI error answers without torch (~2 s)
        from .runner import evaluate_experiment, evaluate_run  # late: a CLI error answers without torch (~2 s)

        uri = _tracking_uri(args)
        if args.experiment:   # checks the evaluation's models itself, once it knows there is work
            results = evaluate_experiment(args.experiment, cfg, uri, only_missing=args.only_missing)
            failed = [k for k, v in results.items() if (isinstance(v, str) and v.startswith("error"))
                      or getattr(v, "errors", None)]
            return 1 if failed else 0
        check_evaluation(cfg, [args.prompt] if args.prompt else None, source="evaluation")
        if args.run_id:
            metrics = evaluate_run(args.run_id, args.prompt, cfg, uri)
        else:
            metrics = evaluate_run(args.generator, args.prompt, cfg, uri, run_id=args.log_to)
        print(json.dumps(metrics, indent=2, sort_keys=True))
        for unit, err in metrics.errors.items():   # isolated: the other metrics are above (and logged)
            print(f"metric {unit} FAILED: {err.reason}", file=sys.stderr)
        return 1 if metrics.errors else 0
    if args.cmd == "sample":
        from .sampling import sample_for_eval  # late: a CLI error answers without torch (~2 s)

        manifest = sample_for_eval(args.generator, args.out, cfg)
        print(json.dumps(manifest, indent=2, sort_keys=True))
        return 0
    if args.cmd == "reference":
        from .fid import save_reference_stats  # late: a CLI error answers without torch (~2 s)

        print(save_reference_stats(args.folder, args.out, cfg))
        return 0
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
