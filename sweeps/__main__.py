"""python -m sweeps validate|run|status ...

    python -m sweeps validate FILE [--skip-model-check] [--skip-cost]
    python -m sweeps run FILE [--address ADDR] [--tracking-uri URI] [--resume] [--storage PATH]
    python -m sweeps status NAME|FILE [--storage PATH] [--tracking-uri URI]
"""
from __future__ import annotations

import argparse
import atexit
import os
import sys

from .cost import resolve_auto_gpu, sweep_cost
from .spec import MissingModelError, SweepError, check_models, load_sweep
from .storage import resolve_storage


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *[line(r) for r in rows]])


def _short(value, n: int = 48) -> str:
    text = str(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def cmd_validate(args: argparse.Namespace) -> int:
    sweep = load_sweep(args.file)
    spec = sweep.spec
    _validate_evaluation(sweep)
    print(f"sweep {spec.name}: {len(sweep.trials)} trial(s)"
          + (f" (optuna: {spec.search.num_samples} samples)" if spec.search.type == "optuna" else ""))
    cols = sweep.varying
    iters = [] if "train.iterations" in cols else ["iterations"]
    rows = [[f"trial_{t.index:03d}", *[_short(t.overrides.get(c)) for c in cols],
             *([str(t.config.train.iterations)] if iters else [])] for t in sweep.trials]
    print(_table(rows, ["trial", *cols, *iters]))
    fixed = {k: v for k, v in (sweep.trials[0].overrides if sweep.trials else {}).items() if k not in cols}
    if fixed:
        print("same in every trial: " + ", ".join(f"{k}={_short(v, 32)}" for k, v in fixed.items()))
    auto = resolve_auto_gpu(sweep) if not args.skip_cost else None
    res = spec.resources
    gpu_text = f"{res.gpu} (not resolved: --skip-cost)" if res.gpu == "auto" else f"{res.gpu:g}"
    if auto is not None:
        gpu_text += f" (auto: {round(1 / auto) if auto else 0} trial(s) per {res.gpu_type})"
    print(f"resources per trial: cpu={res.cpu:g} gpu={gpu_text}; max_concurrent_trials="
          f"{spec.max_concurrent_trials or 'unlimited'}; retries={spec.retries}; search={spec.search.type}")
    print(f"storage: {resolve_storage(None, spec.storage_path) / spec.name}; tracking: {spec.tracking_uri or 'local ./mlruns (served on loopback)'}")
    if spec.retries and any(t.config.train.checkpoint_every == 0 for t in sweep.trials):
        print("note: retries > 0 but train.checkpoint_every is 0: a retried trial restarts from step 0 "
              "(set checkpoint_every in the sweep file)")
    if args.skip_cost:
        print("cost: not estimated (--skip-cost)")
    else:
        try:
            configs = [t.config for t in sweep.trials]
            samples = getattr(spec.search, "num_samples", None)
            if samples:                 # optuna: samples are drawn at run time; each is costed as the base point
                configs = configs * samples
                print(f"cost of {samples} optuna samples, each estimated at the base point")
            print(sweep_cost(configs, gpu_type=getattr(spec.resources, "gpu_type", "H100")).text())
        except Exception as exc:        # an estimate never blocks validation (e.g. no checkpoint and no generator.size)
            print(f"cost: unknown ({type(exc).__name__}: {exc})")
    if args.skip_model_check:
        print("model references: not checked (--skip-model-check)")
    else:
        check_models(sweep)
        print("model references: all resolved")
    return 0


def _validate_evaluation(sweep) -> None:
    """Nothing left to do: load_sweep validates `evaluation:` as an EvalConfig (sweeps/schema.py), with
    file:line errors, for the CLI and `run_sweep()` alike."""


def cmd_run(args: argparse.Namespace) -> int:
    from .launcher import run_sweep  # late: the cost model behind it imports open_clip and diffusers (~6 s)

    _validate_evaluation(load_sweep(args.file))
    return run_sweep(args.file, address=args.address, tracking_uri=args.tracking_uri, resume=args.resume,
                     storage=args.storage, skip_model_check=args.skip_model_check)


def cmd_status(args: argparse.Namespace) -> int:
    from .status import sweep_status  # late: the cost model behind it imports open_clip and diffusers (~6 s)

    print(sweep_status(args.name, storage=args.storage, tracking_uri=args.tracking_uri))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate", help="check a sweep file and print its trials")
    v.add_argument("file")
    v.add_argument("--skip-model-check", action="store_true", help="do not resolve model references")
    v.add_argument("--skip-cost", "--no-cost", dest="skip_cost", action="store_true",
                   help="do not estimate FLOPs, memory and time (traced costs are cached on disk: trainables/cost/cache.py)")
    v.set_defaults(fn=cmd_validate)
    r = sub.add_parser("run", help="run a sweep with Ray Tune")
    r.add_argument("file")
    r.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray)")
    r.add_argument("--tracking-uri", help="MLflow tracking URI (default: the sweep file's, MLFLOW_TRACKING_URI, "
                                          "else ./mlruns served on loopback)")
    r.add_argument("--resume", action="store_true", help="continue an interrupted sweep (finished trials are kept)")
    r.add_argument("--storage", help="Tune storage path (default: the sweep file's storage_path, else SWEEPS_STORAGE, "
                                     "else runs/sweeps; relative to this directory; refused inside a Ray job's "
                                     "temporary code copy, and on several nodes unless under SWEEPS_SHARED_MOUNTS)")
    r.add_argument("--skip-model-check", action="store_true", help=argparse.SUPPRESS)
    r.set_defaults(fn=cmd_run)
    s = sub.add_parser("status", help="progress of a sweep (Tune state + MLflow)")
    s.add_argument("name", help="sweep name or sweep file")
    s.add_argument("--storage", help="Tune storage path (same rule as run: the file's storage_path, else "
                                     "SWEEPS_STORAGE, else runs/sweeps)")
    s.add_argument("--tracking-uri")
    s.set_defaults(fn=cmd_status)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except MissingModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def exit_now(code: int) -> None:
    """End the process after a command that traced costs in it: the exit handlers run and the output is flushed,
    but the interpreter's teardown of torch, diffusers and open_clip (2.3 s measured after a one-configuration
    validate, a sixth of it, docs/benchmarks.md) is skipped. Any other command exits normally."""
    if "trainables.cost.model" in sys.modules:
        atexit._run_exitfuncs()                      # logging's shutdown among them
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    exit_now(main())
