"""Tracking load benchmark: N simulated trials through the real spool to a real MLflow server on 127.0.0.1
(tracking.loadtest, where the modes and the reported numbers are described), one row per call.

    python benchmarks/tracking_load.py --store sqlite --trials 64 --mode steady --rate 10 --duration 30 --markdown
    python benchmarks/tracking_load.py --store postgres --workers 4 --trials 256 --mode burst --markdown
    python benchmarks/tracking_load.py --store sqlite --trials 64 --mode backlog --steps 300 --markdown

Prints the row as one JSON line (and with --markdown the docs/benchmarks.md table row); exits 1 if a point was
lost or duplicated or a spool did not drain within --drain-timeout.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tracking.loadtest import LoadConfig, run_load  # noqa: E402


HEADER = ("| store | trials (processes) | load | points logged | delivered | lost | duplicated | grids | points/s "
          "| logging span s | drain s | server CPU s | load avg before/after |\n|" + "---|" * 13)


def markdown_row(r: dict) -> str:
    what = {"steady": f"steady {r['rate']:g} steps/s x {r['duration']:g} s",
            "burst": f"burst {r['burst_steps']} steps every {r['burst_every']:g} s x {r['duration']:g} s",
            "backlog": f"backlog {r['steps']} steps"}[r["mode"]]
    store = "SQLite, 1 worker" if r["store"] == "sqlite" else f"PostgreSQL, {r['workers']} workers"
    if r.get("http", "uvicorn") != "uvicorn":
        store += f" ({r['http']})"
    cpu = f"{r['server_cpu_s']}" + (f" + {r['db_cpu_s']} db" if r.get("db_cpu_s") else "")
    return (f"| {store} | {r['trials']} ({r['procs']}) | {what} | {r['logged']} | {r['delivered']} | {r['lost']} | "
            f"{r['duplicates']} | {r['grids_delivered']}/{r['grids_logged']} | {r['points_per_s']} | "
            f"{r.get('log_span_s', round(r['wall_s'] - r['drain_s'], 1))} | {r['drain_s']} | {cpu} | "
            f"{r['load_before']}/{r['load_after']} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, field in LoadConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if name == "store_dir":
            parser.add_argument(flag, default=None)
        else:
            parser.add_argument(flag, type=type(field.default) if field.default is not None else str,
                                default=field.default, help=field.description)
    parser.add_argument("--markdown", action="store_true", help="also print the docs/benchmarks.md table row")
    args = vars(parser.parse_args(argv))
    markdown = args.pop("markdown")
    row = run_load(LoadConfig(**args))
    print(json.dumps(row), flush=True)
    if markdown:
        print(markdown_row(row))
    ok = row["lost"] == 0 and row["duplicates"] == 0 and row["extra_runs"] == 0 and row["all_closed"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
