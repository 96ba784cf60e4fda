"""`make demo`: the quick pocket sweep end to end, offline, on the embedded defaults.

    python -m pocket.demo [--sweep sweeps/pocket/demo.yaml]

Runs the sweep on an in-process Ray instance with a local MLflow store (./mlruns), each trial adapting the
committed pocket StyleGAN2 with StyleGAN-NADA or StyleGAN-Fusion and then evaluated against the prompt's
ground-truth set; prints the comparison table, `make ui` (the MLflow UI on the results), the link that opens
the sweep's results at a glance (a saved view of the chart view: one chart per headline metric with every trial,
the trials' sample grids as an image chart, the sweep's axes against its metrics) and the sweep report's path.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sweeps.spec import MissingModelError, SweepError, load_sweep
from sweeps.storage import experiment_dir, resolve_storage
from tracking import PARENT_RUN_TAG, TrackingTarget, experiment_runs, view_url
from tracking.views import VIEW_TAG_PREFIX, view_key

REPO = Path(__file__).resolve().parents[1]
UI = "http://127.0.0.1:5000"   # `make ui` (python -m tracking ui)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pocket.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", default=str(REPO / "sweeps" / "pocket" / "demo.yaml"))
    ap.add_argument("--storage", default=None, help="default: runs/demo/<timestamp> (a fresh folder per run)")
    args = ap.parse_args(argv)

    from sweeps.launcher import run_sweep  # late: a CLI error answers without the cost model behind it (~6 s)

    storage = args.storage or str(REPO / "runs" / "demo" / time.strftime("%Y%m%d-%H%M%S"))
    print(f"demo: running {args.sweep} (pocket models, local Ray, local MLflow store); trial outputs in {storage}")
    tic = time.perf_counter()
    try:
        rc = run_sweep(args.sweep, storage=storage)
    except (SweepError, MissingModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    minutes = (time.perf_counter() - tic) / 60
    spec = load_sweep(args.sweep).spec
    name = spec.name
    # where run_sweep sent the runs (the same rule; no --tracking-uri here): the local store ./mlruns, read
    # directly now that the sweep's server is gone
    target = TrackingTarget.resolve(sweep_file=spec.tracking_uri)
    client = target.client()
    print(f"\ndemo finished in {minutes:.1f} min (exit {rc}).")
    print("Open the MLflow UI on the results (lean server on 127.0.0.1:5000; Ctrl-C stops it):  make ui")
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        parents, trials = experiment_runs(client, name)
        newest = max(parents, key=lambda r: r.info.start_time or 0, default=None)
        mine = [r for r in trials if newest is not None and r.data.tags.get(PARENT_RUN_TAG) == newest.info.run_id]
        key = view_key(name)
        if VIEW_TAG_PREFIX + key in experiment.tags:
            print(f"  the results at a glance ({len(mine)} trials: a chart per headline metric, the sample grids, "
                  f"the swept axes; saved view '{name} at a glance' under Views):")
            print(f"    {view_url(UI, experiment.experiment_id, key)}")
    report = experiment_dir(resolve_storage(storage, spec.storage_path), name) / "report.html"
    if report.is_file():
        print(f"  the sweep report (one HTML file, opens offline; also report.html on the sweep run):\n    {report}")
    print("  the table and comparison figure are artifacts of the sweep run, under table/")
    print(f"Rebuild the table any time:  .venv/bin/python -m evaluation table --experiment {name} "
          f"--tracking-uri {target.backend_uri}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
