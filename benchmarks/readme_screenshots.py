"""Regenerate the README's screenshots of the demo: the MLflow chart view of the sweep's saved view (results at a
glance) and the sweep report, rendered by headless Chromium (Debian's `chromium`, 1600x1100).

    python benchmarks/readme_screenshots.py [--fresh] [--store mlruns] [--out docs/images]

--fresh runs the demo first (`python -m pocket.demo`, ~10 min on 2 cores); without it the newest demo sweep in the
local store (./mlruns, what `make demo` writes) is shown. The UI is served by the lean server on a free loopback
port for the duration; the browser profile has seen the Assistant panel, so it stays closed (docs/evaluation.md).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tracking import experiment_runs, mlflow_client, serve_local, view_url  # noqa: E402
from tracking.browser import QUIET_MLFLOW_UI, Browser  # noqa: E402
from tracking.views import view_key  # noqa: E402

NAME = "pocket-demo"
TRIALS_VISIBLE = "document.body.innerText.includes('results at a glance') && document.body.innerText.includes('-s0')"
GRIDS_LOADED = ("[...document.images].filter(i => i.src.includes('samples~grid') && i.complete && i.naturalWidth > 0)"
                ".length > 0")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fresh", action="store_true", help="run the demo first (python -m pocket.demo)")
    ap.add_argument("--store", default=str(REPO / "mlruns"), help="the local MLflow store (folder holding mlflow.db)")
    ap.add_argument("--storage", default=None, help="with --fresh: the demo's --storage")
    ap.add_argument("--out", default=str(REPO / "docs" / "images"))
    args = ap.parse_args(argv)
    if args.fresh:
        cmd = [sys.executable, "-m", "pocket.demo"] + (["--storage", args.storage] if args.storage else [])
        subprocess.run(cmd, cwd=REPO, check=True)
    out = Path(args.out)
    store = Path(args.store)
    client = mlflow_client(f"sqlite:///{store.resolve() / 'mlflow.db'}")
    exp = client.get_experiment_by_name(NAME)
    if exp is None:
        print(f"error: no experiment {NAME!r} in {store}: run `make demo` (or pass --fresh)", file=sys.stderr)
        return 2
    parents, _ = experiment_runs(client, NAME)
    newest = max(parents, key=lambda r: r.info.start_time or 0)
    report_dir = out / "tmp_report"
    report_dir.mkdir(parents=True, exist_ok=True)
    report = Path(client.download_artifacts(newest.info.run_id, "report.html", str(report_dir)))
    with serve_local(store) as server, Browser(1600, 1100) as b:
        b.open(view_url(server.url, exp.experiment_id, view_key(NAME)), local_storage=QUIET_MLFLOW_UI)
        b.wait_for(TRIALS_VISIBLE, 90)
        b.wait_for(GRIDS_LOADED, 90)
        b.settle(3)          # the charts' last animation frame
        print(b.screenshot(out / "mlflow_pocket_demo_glance.png"))
        b.errors.clear()     # the UI's own (a 404 for /users/current on a server without auth): not the report's
        b.open(report.resolve().as_uri())
        b.wait_for("[...document.images].every(i => i.complete && i.naturalWidth > 0)", 30)
        print(b.screenshot(out / "pocket_demo_report.png"))
        if b.errors:
            print("console errors:", *b.errors, sep="\n  ", file=sys.stderr)
    for f in report_dir.iterdir():
        f.unlink()
    report_dir.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
