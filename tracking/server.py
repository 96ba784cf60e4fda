"""A lean local MLflow server: `mlflow server` on loopback over a SQLite store, one worker, and none of
MLflow 3's job runner / task consumers (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false: one process instead of ten).
Used by sweeps (a background server for the trials) and by `python -m tracking ui` (`make ui`).

Another store (`backend_uri=`, e.g. PostgreSQL from tracking.postgres) can take several workers (`workers=`);
artifacts are always proxied by the server (`--artifacts-destination`, `mlflow-artifacts:` URIs), so no client
needs the artifact folder. SQLite is tuned where MLflow lets it be: the database is switched to write-ahead
logging before the server opens it (readers no longer block the one writer; the mode is stored in the file), and
see `POOL_ENV` for the connection pool (the wedge of issue 19)."""
from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .fast_store import FAST_METRICS_ENV

# the lean server: no job execution (MLflow 3 would start a job runner and task consumers, ~2 GB), no telemetry
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
# metrics written in bulk (tracking/fast_store.py); a caller's environment may set it to 0 (MLflow's own writes)
FAST_ENV = {FAST_METRICS_ENV: "1"}
# MLflow's connection pool, the cause of the wedge under concurrent trials (issue 19). The server runs each
# request on one of anyio's 40 threads (per worker), and `log_batch` holds one pooled connection (its outer
# session, which has read the run) while `_log_params` / `_log_metrics` / `_log_model_metrics` each check out a
# second one. MLflow's default pool (SQLAlchemy's 5 + 10 overflow) lets 15 concurrent log_batch calls hold every
# connection while each waits for its second: nothing moves until the pool's 30 s timeout answers them 400
# "QueuePool limit ... timed out", the clients retry, and it starts again (a single new log_batch then waited more
# than 95 s while /health answered in 2 ms). Two connections per thread can never deadlock; the overflow ones
# are opened only under load and closed when returned. Applied to every store (PostgreSQL: up to
# POOL_CONNECTIONS per worker, see tracking.postgres.LocalPostgres max_connections).
THREADS_PER_WORKER = 40                      # anyio's default thread limiter, which uvicorn/starlette use
POOL_CONNECTIONS = 2 * THREADS_PER_WORKER + 2
POOL_ENV = {"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "10",
            "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": str(POOL_CONNECTIONS - 10)}


# The HTTP server in front of MLflow's handlers. uvicorn (MLflow's default) serves the FastAPI app: the whole UI
# and REST API, with the Flask handlers behind an ASGI-to-WSGI bridge. gunicorn serves the Flask app directly
# (the tracking REST API, artifacts and the UI's run pages; not MLflow 3's FastAPI-only routes: OpenTelemetry
# ingestion, jobs, AI gateway, assistant): about a third less server CPU per request (13 -> 8.6 ms for a
# log_batch of 80 points, docs/benchmarks.md), for a server that takes the writes of hundreds of trials; and its
# app is MLflow's with the lean log-batch route of tracking/lean_app.py (the `sgf-lean` app of pyproject.toml).
HTTP_SERVERS = {"uvicorn": [],
                "gunicorn": ["--gunicorn-opts", f"--threads {THREADS_PER_WORKER} --timeout 120", "--app-name", "sgf-lean"]}


def sqlite_wal(db_path: str | Path) -> None:
    """Put a SQLite database (created if missing) in write-ahead-logging mode; the mode persists in the file."""
    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(str(db_path), timeout=30)
    try:
        con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout: float = 60.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except Exception:
            time.sleep(0.3)
    return False


class LocalMlflowServer:
    """`mlflow server` on loopback over a SQLite store (artifacts served over HTTP): one writer process,
    so concurrent trials never contend for the SQLite file."""

    def __init__(self, store_dir: str | Path, host: str = "127.0.0.1", port: int | None = None,
                 log_path: str | Path | None = None, backend_uri: str | None = None, workers: int = 1,
                 tune_pool: bool = True, http: str = "uvicorn"):
        if workers < 1:
            raise ValueError(f"LocalMlflowServer(workers={workers}): workers must be >= 1")
        if http not in HTTP_SERVERS:
            raise ValueError(f"LocalMlflowServer(http={http!r}): choose one of {', '.join(HTTP_SERVERS)}")
        self.http = http
        self.store_dir = Path(store_dir).resolve()
        self.host = host
        self.port = port or _free_port(host)
        self.log_path = Path(log_path) if log_path else self.store_dir / "server.log"
        self._backend_uri = backend_uri
        self.workers = workers
        self.tune_pool = tune_pool
        self.proc: subprocess.Popen | None = None

    @property
    def backend_uri(self) -> str:
        return self._backend_uri or f"sqlite:///{self.store_dir / 'mlflow.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.backend_uri.startswith("sqlite:")

    def env(self) -> dict[str, str]:
        """The server's environment: SERVER_ENV, and POOL_ENV and FAST_ENV unless the caller's environment sets
        them."""
        extra = {**(POOL_ENV if self.tune_pool else {}), **FAST_ENV}
        env = dict(os.environ, **SERVER_ENV, **{k: v for k, v in extra.items() if k not in os.environ})
        if not self.is_sqlite:
            env["MLFLOW_BACKEND_STORE_URI"] = self.backend_uri
        return env

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        head = [str(mlflow_bin)] if mlflow_bin.exists() else [sys.executable, "-m", "mlflow"]
        # a SQLite path goes on the command line; any other URI (it may hold a password) only in the
        # environment (MLFLOW_BACKEND_STORE_URI, see env()), where `ps` does not show it to other users
        store = ["--backend-store-uri", self.backend_uri] if self.is_sqlite else []
        return head + ["server", *store, "--artifacts-destination", str(self.store_dir / "artifacts"),
                       "--host", self.host, "--port", str(self.port), "--workers", str(self.workers),
                       *HTTP_SERVERS[self.http]]

    def start(self, timeout: float = 90.0) -> "LocalMlflowServer":
        self.store_dir.mkdir(parents=True, exist_ok=True)
        (self.store_dir / "artifacts").mkdir(exist_ok=True)
        if self.is_sqlite:
            sqlite_wal(self.backend_uri.split("sqlite:///", 1)[-1])
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT, env=self.env(),
                                     start_new_session=True)
        if not wait_healthy(self.url, timeout):
            self.stop()
            raise RuntimeError(f"mlflow server did not become healthy at {self.url} in {timeout:.0f}s; "
                               f"see {self.log_path}")
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.proc = None
        self._log.close()


@contextmanager
def serve_local(store_dir: str | Path, port: int | None = None, **kw) -> Iterator[LocalMlflowServer]:
    server = LocalMlflowServer(store_dir, port=port, **kw).start()
    try:
        yield server
    finally:
        server.stop()

