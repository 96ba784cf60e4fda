"""`make demo`: the quick pocket sweep end to end, offline, on the embedded defaults.

    python -m pocket.demo [--sweep sweeps/pocket/demo.yaml]

Runs the sweep on an in-process Ray instance with a local MLflow store (./mlruns), each trial adapting the
committed pocket StyleGAN2 with StyleGAN-NADA or StyleGAN-Fusion and then evaluated against the prompt's
ground-truth set; prints the comparison table and the command that opens the MLflow UI on the results.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pocket.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", default=str(REPO / "sweeps" / "pocket" / "demo.yaml"))
    ap.add_argument("--storage", default=None, help="default: runs/demo/<timestamp> (a fresh folder per run)")
    args = ap.parse_args(argv)

    from sweeps.launcher import run_sweep
    from tracking import default_tracking_dir
    from sweeps.spec import MissingModelError, SweepError

    storage = args.storage or str(REPO / "runs" / "demo" / time.strftime("%Y%m%d-%H%M%S"))
    print(f"demo: running {args.sweep} (pocket models, local Ray, local MLflow store); trial outputs in {storage}")
    tic = time.perf_counter()
    try:
        rc = run_sweep(args.sweep, storage=storage)
    except (SweepError, MissingModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    minutes = (time.perf_counter() - tic) / 60
    from sweeps.spec import load_sweep
    from tracking import mlflow_client

    name = load_sweep(args.sweep).spec.name
    store = Path(default_tracking_dir())
    experiment = mlflow_client(f"sqlite:///{store / 'mlflow.db'}").get_experiment_by_name(name)
    runs_url = f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id if experiment else ''}/runs"
    print(f"\ndemo finished in {minutes:.1f} min (exit {rc}).")
    print(f"Open the MLflow UI on the results, then browse {runs_url} (each sweep run expands into its trials;")
    print("the table and comparison figure are artifacts of the sweep run, under table/):")
    print(f"  .venv/bin/mlflow ui --backend-store-uri sqlite:///{store / 'mlflow.db'} "
          f"--default-artifact-root {store / 'artifacts'} --host 127.0.0.1 --port 5000 --workers 1")
    print(f"Rebuild the table any time:  .venv/bin/python -m evaluation table --experiment {name} "
          f"--tracking-uri sqlite:///{store / 'mlflow.db'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
