"""`python -m tracking replay SPOOL_DIR...` | `python -m tracking ui [--store DIR] [--port N]` |
`python -m tracking postgres start|stop|uri DIR [--port N] [--remove]`.

replay  send what a trial's MLflow spool still holds (the server was down when it ended)
ui      the MLflow UI on the local store sweeps and `make demo` write (./mlruns): the lean server
        (tracking.server: loopback, one worker, no job runner), in the foreground; Ctrl-C stops it
postgres  a throwaway PostgreSQL cluster in DIR on 127.0.0.1 with a generated password (tracking.postgres):
        `start` creates it on first use and prints the file holding its URI; `stop` stops it (`--remove`
        deletes it); `uri` prints the file. Used by `platform/local/up --store postgres`.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .postgres import LocalPostgres
from .server import LocalMlflowServer
from .spool import REJECTED_FILE, replay
from .store import default_tracking_dir


def _replay(args) -> int:
    ok = True
    for d in args.spool_dirs:
        done = replay(d, args.tracking_uri, args.timeout)
        rejected = Path(d) / REJECTED_FILE
        n = len(rejected.read_text().splitlines()) if rejected.is_file() else 0
        print(f"{d}: {'sent' if done else 'still pending'}" + (f"; {n} rejected operation(s) in {rejected}" if n else ""))
        ok &= done
    return 0 if ok else 1


def _ui(args) -> int:
    store = Path(args.store).resolve()
    if not (store / "mlflow.db").is_file():
        print(f"error: no MLflow store at {store / 'mlflow.db'}: run `make demo` (or a sweep) first, or pass "
              f"--store DIR (the folder holding mlflow.db)", file=sys.stderr)
        return 2
    server = LocalMlflowServer(store, host="127.0.0.1", port=args.port)
    cmd = server.command()
    print(f"MLflow UI on {store}: {server.url}  (Ctrl-C stops it)", flush=True)
    os.execve(cmd[0] if os.path.isabs(cmd[0]) else sys.executable, cmd, server.env())
    return 0   # not reached: the server replaced this process


def _postgres(args) -> int:
    pg = LocalPostgres(args.folder, port=args.port, max_connections=args.max_connections)
    if args.action == "start":
        pg.start()
        print(pg.folder / "uri")
    elif args.action == "stop":
        pg.stop(remove=args.remove)
    else:
        print(pg.folder / "uri")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracking", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    rp = sub.add_parser("replay", help="send a trial's leftover MLflow spool")
    rp.add_argument("spool_dirs", nargs="+")
    rp.add_argument("--tracking-uri")
    rp.add_argument("--timeout", type=float, default=60.0)
    ui = sub.add_parser("ui", help="the MLflow UI (lean server, loopback) on the local store")
    ui.add_argument("--store", default=str(default_tracking_dir()), help="folder holding mlflow.db (default ./mlruns)")
    ui.add_argument("--port", type=int, default=5000)
    pg = sub.add_parser("postgres", help="a throwaway PostgreSQL cluster in a folder, on 127.0.0.1")
    pg.add_argument("action", choices=["start", "stop", "uri"])
    pg.add_argument("folder")
    pg.add_argument("--port", type=int, default=None, help="default: the one recorded in FOLDER, else a free one")
    pg.add_argument("--remove", action="store_true", help="stop: also delete the cluster")
    pg.add_argument("--max-connections", type=int, default=400,
                    help="PostgreSQL's max_connections: at least 82 per MLflow server worker (tracking.server "
                         "POOL_CONNECTIONS) + 20")
    args = parser.parse_args(argv)
    return {"replay": _replay, "ui": _ui, "postgres": _postgres}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
