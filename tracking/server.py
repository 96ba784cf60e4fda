"""A lean local MLflow server: `mlflow server` on loopback over a SQLite store, one worker, and none of
MLflow 3's job runner / task consumers (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false: one process instead of ten).
Used by sweeps (a background server for the trials) and by `python -m tracking ui` (`make ui`)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# the lean server: no job execution (MLflow 3 would start a job runner and task consumers, ~2 GB), no telemetry
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}


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
                 log_path: str | Path | None = None):
        self.store_dir = Path(store_dir).resolve()
        self.host = host
        self.port = port or _free_port(host)
        self.log_path = Path(log_path) if log_path else self.store_dir / "server.log"
        self.proc: subprocess.Popen | None = None

    @property
    def backend_uri(self) -> str:
        return f"sqlite:///{self.store_dir / 'mlflow.db'}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        head = [str(mlflow_bin)] if mlflow_bin.exists() else [sys.executable, "-m", "mlflow"]
        return head + ["server", "--backend-store-uri", self.backend_uri,
                       "--artifacts-destination", str(self.store_dir / "artifacts"),
                       "--host", self.host, "--port", str(self.port), "--workers", "1"]

    def start(self, timeout: float = 90.0) -> "LocalMlflowServer":
        self.store_dir.mkdir(parents=True, exist_ok=True)
        (self.store_dir / "artifacts").mkdir(exist_ok=True)
        env = dict(os.environ, **SERVER_ENV)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT, env=env,
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
def serve_local(store_dir: str | Path, port: int | None = None) -> Iterator[LocalMlflowServer]:
    server = LocalMlflowServer(store_dir, port=port).start()
    try:
        yield server
    finally:
        server.stop()

