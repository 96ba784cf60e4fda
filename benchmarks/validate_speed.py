"""Wall time of `python -m sweeps validate --skip-model-check` on every paper sweep, cold and warm.

    .venv/bin/python benchmarks/validate_speed.py [--out /tmp/validate-speed] [SWEEP ...]

Cold: a fresh, empty cost cache (SGF_COST_CACHE under --out): every distinct configuration is traced (in as many
processes as the machine has cores; one step each, the layer-selection pass once per process: the composed trace
of trainables/cost/model.py). Warm: the same command again, answered from the cache. Whole (--check-whole): a third
run with another empty cache and SGF_COST_WHOLE=1 (two whole steps traced per configuration, the reference the
composed trace must equal). Checks that all print the same cost lines, and prints one Markdown row per sweep for
docs/benchmarks.md with the load average before it.
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


def _run(sweep: Path, cache: Path, whole: bool = False) -> tuple[float, list[str]]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SGF_COST_CACHE": str(cache), "PYTHONPATH": str(REPO),
           "SGF_COST_WHOLE": "1" if whole else "0"}
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
    ap.add_argument("--check-whole", action="store_true", help="also trace two whole steps and compare")
    ap.add_argument("sweeps", nargs="*", type=Path)
    args = ap.parse_args(argv)
    sweeps = args.sweeps or sorted((REPO / "sweeps" / "paper").glob("*.yaml"))
    whole_cols = " whole s |" if args.check_whole else ""
    print(f"| sweep | load avg before | cold s | warm s |{whole_cols} same cost lines |\n"
          f"|---|---:|---:|---:|{'---:|' if args.check_whole else ''}---|")
    for sweep in sweeps:
        cache = Path(args.out) / sweep.stem
        shutil.rmtree(cache, ignore_errors=True)
        load = os.getloadavg()[0]
        cold, cold_lines = _run(sweep, cache)
        warm, warm_lines = _run(sweep, cache)
        same = cold_lines == warm_lines
        whole_text = ""
        if args.check_whole:
            shutil.rmtree(Path(str(cache) + "-whole"), ignore_errors=True)
            whole, whole_lines = _run(sweep, Path(str(cache) + "-whole"), whole=True)
            same = same and whole_lines == cold_lines
            whole_text = f" {whole:.1f} |"
        print(f"| {sweep.name} | {load:.1f} | {cold:.1f} | {warm:.1f} |{whole_text} {same} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
