"""The core of the tracking load benchmark (benchmarks/tracking_load.py; tests at small N): N simulated trials log
through the real spool (tracking.spool.RunTracker) to a real MLflow server started here on 127.0.0.1 (SQLite, or
PostgreSQL from tracking.postgres), then everything is read back from the server.

    row = run_load(LoadConfig(store="postgres", workers=2, trials=8, mode="burst"))
    assert row["lost"] == 0 and row["duplicates"] == 0

Each trial logs `metrics` step metrics per step, a small sample grid (a ~4 KB file) every `grid_every` steps and
`eval_metrics` evaluation metrics every `eval_every` steps (the proportions of an adaptation trial). The trials
live in `procs` worker processes (as Ray packs trials into worker processes; each process has one sending
policy, tracking.sender). Modes:

    steady   every trial logs `rate` steps/s for `duration` s
    burst    every `burst_every` s all trials log `burst_steps` steps at the same moment (after an evaluation,
             a checkpoint), and all trials create their runs at the same moment
    backlog  the spools fill first (`steps` steps each, as during a tracking-server outage), then every flusher
             starts at once

Reported (a dict): points logged and delivered (distinct (run, key, step)
read back from the server), duplicates (points beyond one per (run, key, step)), grids logged/delivered,
rejected ops, runs beyond one per trial, sustained points/s (delivered points / (last trial closed - first
step)), the logging span (first to last step: longer than planned when the machine cannot keep the pace), drain
time (the last trial's close() finished minus the last step logged), the server's CPU seconds (its process tree,
from /proc; PostgreSQL's own processes separately), the 1-minute load average before/after, and the spools'
congestion signals. Every wait is bounded.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .client import mlflow_client
from .errors import retry
from .postgres import LocalPostgres
from .sender import gate_for
from .server import POOL_CONNECTIONS, LocalMlflowServer
from .spool import RunTracker

class LoadConfig(BaseModel):
    """One benchmark row (every field is a flag of benchmarks/tracking_load.py: --trials, --mode, ...)."""

    model_config = ConfigDict(extra="forbid")

    store: Literal["sqlite", "postgres"] = "sqlite"
    workers: int = Field(1, ge=1, le=32, description="mlflow server workers (SQLite: keep 1)")
    http: Literal["uvicorn", "gunicorn"] = Field("uvicorn", description="the server's HTTP server (tracking.server)")
    trials: int = Field(8, ge=1, le=4096)
    procs: int = Field(0, ge=0, le=64, description="worker processes hosting the trials (0: min(trials, 8))")
    mode: Literal["steady", "burst", "backlog"] = "steady"
    rate: float = Field(10.0, gt=0, le=1000, description="steady: steps per second per trial")
    duration: float = Field(10.0, gt=0, le=3600, description="steady/burst: seconds of logging")
    burst_every: float = Field(5.0, gt=0, description="burst: seconds between bursts")
    burst_steps: int = Field(50, ge=1, description="burst: steps per trial per burst")
    steps: int = Field(300, ge=1, description="backlog: steps spooled per trial before the flushers start")
    metrics: int = Field(4, ge=1, le=100, description="step metrics per step")
    grid_every: int = Field(50, ge=0, description="a sample grid every this many steps (0: none)")
    eval_every: int = Field(100, ge=0, description="evaluation metrics every this many steps (0: none)")
    eval_metrics: int = Field(8, ge=0, le=100)
    flush_interval: float = Field(2.0, gt=0, description="RunTracker.flush_interval (the sweeps' default)")
    drain_timeout: float = Field(600.0, gt=0, description="longest wait for the spools to drain after the last step")
    max_in_flight: int = Field(0, ge=0, description="TRACKING_MAX_IN_FLIGHT for the worker processes (0: default)")
    store_dir: str | None = Field(None, description="where the server's store goes (default: a temp folder)")

    @property
    def n_procs(self) -> int:
        return self.procs or min(self.trials, 8)


READ_BACK_THREADS = 4
BACKLOG_FILL_S = 5.0              # backlog: the spools are filled within this, then every flusher starts
GRID = bytes(range(256)) * 16     # 4 KiB stand-in for a small PNG grid


def _schedule(cfg: LoadConfig) -> list[tuple[float, int, int]]:
    """(seconds after t0, first step, last step) of each logging tick, the same for every trial."""
    if cfg.mode == "steady":
        n = max(1, int(round(cfg.rate * cfg.duration)))
        return [(i / cfg.rate, i + 1, i + 1) for i in range(n)]
    if cfg.mode == "burst":
        bursts = max(1, int(cfg.duration // cfg.burst_every))
        return [(b * cfg.burst_every, b * cfg.burst_steps + 1, (b + 1) * cfg.burst_steps) for b in range(bursts)]
    return [(0.0, 1, cfg.steps)]


def _log_step(tracker, cfg: LoadConfig, step: int, grid_dir: Path) -> tuple[int, int]:
    """One step of one trial; returns (metric points, grids) logged."""
    points = {f"train/m{k}": step * 0.001 + k for k in range(cfg.metrics)}
    tracker.log_metrics(points, step=step)
    n, grids = cfg.metrics, 0
    if cfg.eval_every and step % cfg.eval_every == 0 and cfg.eval_metrics:
        tracker.log_metrics({f"eval/e{k}": step + k * 0.5 for k in range(cfg.eval_metrics)}, step=step)
        n += cfg.eval_metrics
    if cfg.grid_every and step % cfg.grid_every == 0:
        path = grid_dir / f"step_{step:06d}.png"
        path.write_bytes(GRID)
        tracker.log_artifact(path, "samples")
        grids = 1
    return n, grids


def _worker(cfg_json: str, uri: str, root: str, index: int, trial_ids: list[int], t0: float, out_q) -> None:
    """One worker process: its trials' trackers, driven by one thread on the shared schedule."""
    cfg = LoadConfig.model_validate_json(cfg_json)
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    if cfg.max_in_flight:
        os.environ["TRACKING_MAX_IN_FLIGHT"] = str(cfg.max_in_flight)
    trackers = []
    for t in trial_ids:
        d = Path(root) / f"trial_{t:04d}"
        (d / "grids").mkdir(parents=True, exist_ok=True)
        trackers.append((RunTracker(uri, "load", spool_dir=d / "spool", run_name=f"trial_{t:04d}",
                                    tags={"sweep.role": "trial"}, flush_interval=cfg.flush_interval), d / "grids"))
    gate = gate_for(uri)
    logged = grids = 0
    if cfg.mode != "backlog":
        time.sleep(max(0.0, t0 - time.time()))
        for tr, _ in trackers:       # burst: all runs created at the same moment; steady: as trials start
            tr.start(wait=0)
    last_step_at = time.time()
    for at, first, last in _schedule(cfg):
        time.sleep(max(0.0, t0 + at - time.time()))
        for tr, gdir in trackers:
            for step in range(first, last + 1):
                n, g = _log_step(tr, cfg, step, gdir)
                logged += n
                grids += g
        last_step_at = time.time()
    if cfg.mode == "backlog":
        time.sleep(max(0.0, t0 + BACKLOG_FILL_S - time.time()))   # every process's flushers start together
        start_at = time.time()
        for tr, _ in trackers:
            tr.start(wait=0)
        last_step_at = start_at
    results: dict[int, tuple[bool, float]] = {}

    def close(i, tr):
        ok = tr.close("FINISHED", timeout=cfg.drain_timeout)
        results[i] = (ok, time.time())

    threads = [threading.Thread(target=close, args=(i, tr)) for i, (tr, _) in enumerate(trackers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(cfg.drain_timeout + 60)
    out_q.put({"index": index, "logged": logged, "grids": grids, "last_step_at": last_step_at,
               "closed_at": max((t for _, t in results.values()), default=time.time()),
               "all_closed": len(results) == len(trackers) and all(ok for ok, _ in results.values()),
               "rejected": sum(tr.rejected_ops for tr, _ in trackers),
               "congestion": gate.congestion_signals, "max_in_flight_seen": gate.max_seen_in_flight,
               "runs": {tr.run_name: tr.run_id for tr, _ in trackers}})


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of `pid` and its descendants, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
        stats[int(entry)] = (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / tick
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, 0.0)
        todo.extend(children.get(p, []))
    return total


def read_back(uri: str, runs: dict[str, str], cfg: LoadConfig) -> dict[str, int]:
    """Count what the server holds: distinct (run, key, step) points, extra copies, grids, runs beyond one per
    trial (a create_run sent twice)."""
    client = mlflow_client(uri)
    keys = [f"train/m{k}" for k in range(cfg.metrics)]
    if cfg.eval_every and cfg.eval_metrics:
        keys += [f"eval/e{k}" for k in range(cfg.eval_metrics)]

    def one(run_id: str) -> tuple[int, int, int, int]:
        n_distinct = n_total = 0
        for key in keys:
            hist = retry(lambda: client.get_metric_history(run_id, key), what="read back")
            n_total += len(hist)
            n_distinct += len({m.step for m in hist})
        n_grids = len(retry(lambda: client.list_artifacts(run_id, "samples"), what="read back")) \
            if cfg.grid_every else 0
        finished = retry(lambda: client.get_run(run_id), what="read back").info.status == "FINISHED"
        return n_distinct, n_total, n_grids, 0 if finished else 1

    with ThreadPoolExecutor(READ_BACK_THREADS) as pool:
        counts = list(pool.map(one, [r for r in runs.values() if r is not None]))
    distinct, total, grids, unfinished = (sum(c[i] for c in counts) for i in range(4))
    exp = retry(lambda: client.get_experiment_by_name("load"), what="read back")
    n_runs = len(retry(lambda: client.search_runs([exp.experiment_id], max_results=5000), what="read back")) \
        if exp else 0
    return {"delivered": distinct, "duplicates": total - distinct, "grids_delivered": grids,
            "runs_unfinished": unfinished, "extra_runs": n_runs - len(runs)}


def run_load(cfg: LoadConfig) -> dict:
    """Start the store and server, run the trials, read back; returns the row (see the module docstring)."""
    tmp = None
    if cfg.store_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="tracking-load-")
    root = Path(cfg.store_dir or tmp.name)
    pg = None
    server = None
    load_before = os.getloadavg()[0]
    try:
        if cfg.store == "postgres":
            pg = LocalPostgres(root / "postgres", max_connections=POOL_CONNECTIONS * cfg.workers + 50)
            pg.start()
            server = LocalMlflowServer(root / "server", backend_uri=pg.uri, workers=cfg.workers,
                                       http=cfg.http).start(timeout=180)
        else:
            server = LocalMlflowServer(root / "server", workers=cfg.workers, http=cfg.http).start(timeout=180)
        cpu0 = _tree_cpu(server.proc.pid)
        pg_pid = int((pg.data_dir / "postmaster.pid").read_text().split()[0]) if pg is not None else None
        db0 = _tree_cpu(pg_pid) if pg_pid else 0.0
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        ids = list(range(cfg.trials))
        chunks = [ids[i::cfg.n_procs] for i in range(cfg.n_procs)]
        # the processes import MLflow first (about 2 s each on 2 cores): start them well before t0
        t0 = time.time() + 5.0 + 1.5 * cfg.n_procs
        procs = [ctx.Process(target=_worker, args=(cfg.model_dump_json(), server.url, str(root / "trials"), i,
                                                   chunk, t0, q)) for i, chunk in enumerate(chunks) if chunk]
        for p in procs:
            p.start()
        span = _schedule(cfg)[-1][0]
        limit = time.time() + (t0 - time.time()) + span + cfg.drain_timeout + 180
        results = []
        while len(results) < len(procs) and time.time() < limit:
            try:
                results.append(q.get(timeout=5))
            except Exception:
                if not any(p.is_alive() for p in procs) and q.empty():
                    break
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
        cpu = _tree_cpu(server.proc.pid) - cpu0
        db_cpu = _tree_cpu(pg_pid) - db0 if pg_pid else 0.0   # PostgreSQL's own processes (SQLite: in the server)
        runs = {k: v for r in results for k, v in r["runs"].items()}
        back = read_back(server.url, runs, cfg)
        logged = sum(r["logged"] for r in results)
        last_step = max(r["last_step_at"] for r in results) if results else float("nan")
        closed = max(r["closed_at"] for r in results) if results else float("nan")
        start = t0
        row = {**cfg.model_dump(exclude={"store_dir"}), "procs": cfg.n_procs,
               "processes_reported": len(results), "all_closed": all(r["all_closed"] for r in results),
               "logged": logged, **back, "lost": logged - back["delivered"],
               "grids_logged": sum(r["grids"] for r in results),
               "rejected": sum(r["rejected"] for r in results),
               "drain_s": round(closed - last_step, 2),
               "points_per_s": round(back["delivered"] / max(1e-9, closed - start), 1),
               "wall_s": round(closed - start, 1), "log_span_s": round(last_step - start, 1),
               "server_cpu_s": round(cpu, 1), "db_cpu_s": round(db_cpu, 1),
               "congestion_signals": sum(r["congestion"] for r in results),
               "max_in_flight_seen": max((r["max_in_flight_seen"] for r in results), default=0),
               "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}
        return row
    finally:
        if server is not None:
            server.stop()
        if pg is not None:
            pg.stop(remove=True)
        if tmp is not None:
            tmp.cleanup()
