"""A 1,000-trial pocket sweep on this machine: wall time, per-trial overhead, driver memory, MLflow, status, table.

    .venv/bin/python benchmarks/thousand_trials.py --out /tmp/thousand [--sweep sweeps/pocket/thousand.yaml]

Runs `python -m sweeps run` on the sweep (model paths made absolute, cwd = --out so its ./mlruns is fresh) and
polls the driver's resident memory every second (psutil; the driver alone, and the driver with every process it
started: Ray's and the lean MLflow server). Then counts the FINISHED trial runs and the parent run's metric keys,
times `python -m sweeps status NAME` and `python -m evaluation table --experiment NAME`, and reads the trials'
phase timings (perf/phase/*). Prints a Markdown row for docs/benchmarks.md and writes result.json under --out.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
       "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO),
       "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}
for var in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
    ENV.pop(var, None)


def _absolute(node, key=None):
    """Relative model paths of the sweep made absolute against the repo (the run's cwd is --out)."""
    if isinstance(node, dict):
        return {k: _absolute(v, k) for k, v in node.items()}
    if isinstance(node, list):
        return [_absolute(v, key) for v in node]
    if isinstance(node, str) and node.startswith("pocket/") and (REPO / node).exists():
        return str(REPO / node)
    return node


def _poll_memory(pid: int, peak: dict, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        try:
            proc = psutil.Process(pid)
            driver = proc.memory_info().rss
            tree = driver + sum(c.memory_info().rss for c in proc.children(recursive=True))
        except psutil.Error:
            continue
        peak["driver"] = max(peak.get("driver", 0), driver)
        peak["tree"] = max(peak.get("tree", 0), tree)


def _timed(cmd: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    tic = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=1800)
    return time.perf_counter() - tic, proc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--sweep", default=str(REPO / "sweeps" / "pocket" / "thousand.yaml"))
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    spec = _absolute(yaml.safe_load(Path(args.sweep).read_text()))
    spec["storage_path"] = str(out / "storage")
    sweep = out / "sweep.yaml"
    sweep.write_text(yaml.safe_dump(spec, sort_keys=False))
    name = spec["name"]

    peak: dict[str, int] = {}
    stop = threading.Event()
    tic = time.perf_counter()
    with (out / "run.log").open("w") as log:
        driver = subprocess.Popen([sys.executable, "-m", "sweeps", "run", str(sweep)], cwd=out, env=ENV,
                                  stdout=log, stderr=subprocess.STDOUT)
        poller = threading.Thread(target=_poll_memory, args=(driver.pid, peak, stop), daemon=True)
        poller.start()
        rc = driver.wait()
    wall = time.perf_counter() - tic
    stop.set()

    status_s, status = _timed([sys.executable, "-m", "sweeps", "status", str(sweep)], out)
    table_s, table = _timed([sys.executable, "-m", "evaluation", "table", "--experiment", name], out)

    sys.path.insert(0, str(REPO))
    from tracking import TrackingTarget, experiment_runs

    client = TrackingTarget.of(None, cwd=out).client()
    parents, trials = experiment_runs(client, name)
    finished = sum(r.info.status == "FINISHED" for r in trials)
    phases: dict[str, list[float]] = {}
    for r in trials:
        for k, v in r.data.metrics.items():
            if k.startswith("perf/phase/") and k.endswith("_s"):
                phases.setdefault(k[len("perf/phase/"):-2], []).append(v)
    mean_phase = {k: sum(v) / len(v) for k, v in phases.items()}
    result = {
        "rc": rc, "trials": len(trials), "finished": finished, "wall_s": wall, "wall_per_trial_s": wall / max(1, len(trials)),
        "driver_peak_rss_mb": peak.get("driver", 0) / 2**20, "tree_peak_rss_mb": peak.get("tree", 0) / 2**20,
        "parent_metric_keys": [len(p.data.metrics) for p in parents], "parent_param_keys": [len(p.data.params) for p in parents],
        "status_s": status_s, "status_rc": status.returncode, "table_s": table_s, "table_rc": table.returncode,
        "mean_phase_s": mean_phase, "date": time.strftime("%Y-%m-%d"), "load_avg": os.getloadavg(),
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"| {len(trials)} | {finished} | {wall / 60:.1f} min | {result['wall_per_trial_s']:.2f} s "
          f"| {result['driver_peak_rss_mb']:.0f} MB ({result['tree_peak_rss_mb']:.0f} MB with Ray and MLflow) "
          f"| {result['parent_metric_keys']} | {status_s:.1f} s | {table_s:.1f} s |")
    return 0 if rc == 0 and finished == len(trials) else 1


if __name__ == "__main__":
    raise SystemExit(main())
