"""Wall time of `python -m sweeps validate --skip-model-check` on every paper sweep, cold and warm.

    .venv/bin/python benchmarks/validate_speed.py [--out /tmp/validate-speed] [SWEEP ...]

Cold: a fresh, empty cost cache (SGF_COST_CACHE under --out): every distinct configuration is traced (in as many
processes as the machine has cores). Warm: the same command again, answered from the cache. Checks that both print
the same cost lines, and prints one Markdown row per sweep for docs/benchmarks.md with the load average before it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(sweep: Path, cache: Path) -> tuple[float, list[str]]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SGF_COST_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    tic = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "sweeps", "validate", "--skip-model-check", str(sweep)], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - tic
    if out.returncode != 0:
        raise SystemExit(f"{sweep}: validate failed:\n{out.stderr[-2000:]}")
    return seconds, [line for line in out.stdout.splitlines() if line.startswith("cost")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/validate-speed")
    ap.add_argument("sweeps", nargs="*", type=Path)
    args = ap.parse_args(argv)
    sweeps = args.sweeps or sorted((REPO / "sweeps" / "paper").glob("*.yaml"))
    print("| sweep | load avg before | cold s | warm s | same cost lines |\n|---|---:|---:|---:|---|")
    for sweep in sweeps:
        cache = Path(args.out) / sweep.stem
        shutil.rmtree(cache, ignore_errors=True)
        load = os.getloadavg()[0]
        cold, cold_lines = _run(sweep, cache)
        warm, warm_lines = _run(sweep, cache)
        print(f"| {sweep.name} | {load:.1f} | {cold:.1f} | {warm:.1f} | {cold_lines == warm_lines} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
