"""MLflow tracking for adaptation runs: a write-ahead spool that never blocks or loses a number.

Every operation (params, tags, step metrics, artifacts, the final status) is appended to a JSON-lines
spool on disk first (in the trial directory), then a background thread sends it to the tracking server
with `tracking.client.mlflow_client(tracking_uri)` (the URI is always explicit: no global `mlflow.set_tracking_uri`).
Every failure is classified (`tracking.errors.classify_error`): transient ones (connection refused, timeouts, 5xx, 408/429,
"database is locked") are retried with backoff for as long as it takes; permanent ones (any other 4xx MLflow
answer, such as INVALID_PARAMETER_VALUE for a changed param, or a missing artifact file) and malformed spool
lines are moved to `rejected.jsonl` beside the spool and reported at WARNING; unknown exceptions are retried
`max_unknown_attempts` times, then rejected too (at ERROR). So the spool always moves on: it cannot wedge
behind one bad operation. Training never waits. A restarted process (a Tune retry) reopens the same spool and run id, so the
child run continues where it stopped. Leftovers can be replayed with

    python -m tracking replay SPOOL_DIR [--tracking-uri URI]

Exactly once: a request that timed out may still have been executed by the server, so every re-send must be
harmless. MLflow's SQL store ignores a metric point it already holds (same key, timestamp, step and value: its
primary key), params and tags are idempotent, artifacts overwrite the same file, and the run itself is created
with a spool id tag (`SPOOL_ID_TAG`, kept in run.json before the first attempt) and looked up by it before any
second attempt, so a lost answer never makes a second run.

Under load (many trials, one server) the spools of a process share one sending policy (tracking.sender): a
bounded number of requests in flight, a process-wide jittered pause on congestion, and longer drain intervals
(hence larger batches) when the server is slow. A backlog is visible: above `backlog_warn_bytes` unsent bytes the
spool logs a WARNING and tags its run `tracking.spool_backlog_bytes` (updated with each batch, 0 once drained).

Conventions (experiments, parent/child runs, tags, size limits): tracking.conventions.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import uuid
import time
from pathlib import Path
from typing import Any

from .client import mlflow_client
from .conventions import (MAX_TAG_LEN, METRICS_PER_BATCH, PARAMS_PER_BATCH, PARENT_RUN_TAG, clip_tags,
                          ensure_experiment, truncate_params)
from .errors import TRANSIENT, UNKNOWN, classify_error, is_retryable, retry
from .sender import gate_for, is_congestion, jittered
from .store import sqlite_artifact_location

log = logging.getLogger(__name__)

SPOOL_FILE = "pending.jsonl"
OFFSET_FILE = "sent.offset"
RUN_FILE = "run.json"
REJECTED_FILE = "rejected.jsonl"
SPOOL_ID_TAG = "tracking.spool_id"             # finds the run a lost create_run answer made
BACKLOG_TAG = "tracking.spool_backlog_bytes"   # back-pressure, visible in MLflow


class _RunUnavailable(Exception):
    """The run itself cannot be created or reopened (a permanent answer): nothing in the spool can be sent."""


class RunTracker:
    """One MLflow run written through an on-disk spool by a background thread.

    tracker = RunTracker(uri, "my-sweep", spool_dir=trial_dir / "mlflow_spool", parent_run_id=pid,
                         run_name="trial_003", tags={...}, run_id=None)   # run_id: continue that run
    tracker.start(); tracker.log_params({...}); tracker.log_metrics({...}, step=10)
    tracker.log_artifact(path, "samples"); tracker.close("FINISHED")
    """

    def __init__(self, tracking_uri: str, experiment: str, *, spool_dir: str | Path, run_id: str | None = None,
                 parent_run_id: str | None = None, run_name: str | None = None, tags: dict[str, Any] | None = None,
                 flush_interval: float = 2.0, max_backoff: float = 15.0, max_unknown_attempts: int = 5):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.spool_dir = Path(spool_dir)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.parent_run_id = parent_run_id
        self.run_name = run_name
        self.tags = clip_tags(tags)
        self.flush_interval = flush_interval
        self.max_backoff = max_backoff
        self.max_unknown_attempts = max(1, max_unknown_attempts)   # tries of one op before an UNKNOWN error rejects it
        saved = self._read_run_file()
        self._run_id = run_id or saved.get("run_id")
        self._resumed = self._run_id is not None
        self.spool_id: str = saved.get("spool_id") or uuid.uuid4().hex
        self._create_attempted = bool(saved.get("create_attempted"))
        self.gate = gate_for(tracking_uri)     # the process-wide sending policy (tracking.sender)
        self._latency = 0.0                    # the slowest request of the last drain (queued + sent), seconds
        self._backlog_reported = False         # above backlog_warn_bytes at the last report
        self._lock = threading.Lock()          # appends to the spool
        self._drain_lock = threading.Lock()    # one drain at a time, per tracker (trackers never wait on each other)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = None
        self.last_error: str | None = None
        self.fatal_error: str | None = None    # the run cannot be created/reopened: the spool waits for a replay
        self.sent_ops = 0
        self.rejected_ops = 0
        self._unknown: tuple[Any, int] = (None, 0)   # (spool offset or "run", UNKNOWN failures there so far)
        self._failing = False
        self._seal_partial_line()

    # ---- identity
    @property
    def run_id(self) -> str | None:
        return self._run_id

    def _read_run_file(self) -> dict[str, Any]:
        path = self.spool_dir / RUN_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    def _write_run_file(self) -> None:
        tmp = self.spool_dir / (RUN_FILE + ".tmp")
        tmp.write_text(json.dumps({"run_id": self._run_id, "tracking_uri": self.tracking_uri,
                                   "experiment": self.experiment, "parent_run_id": self.parent_run_id,
                                   "run_name": self.run_name, "tags": self.tags, "spool_id": self.spool_id,
                                   "create_attempted": self._create_attempted}))
        os.replace(tmp, self.spool_dir / RUN_FILE)

    def client(self):
        if self._client is None:
            self._client = mlflow_client(self.tracking_uri)
        return self._client

    def _seal_partial_line(self) -> None:
        """A writer that died mid-line left a fragment: end it, so it is rejected alone instead of merging
        with (and spoiling) the next operation appended after it."""
        path = self.spool_dir / SPOOL_FILE
        if path.is_file() and path.stat().st_size > 0:
            with path.open("rb+") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")

    def _ensure_run(self) -> str:
        client = self.client()
        if self._run_id is None:
            with self.gate.slot():
                exp_id = ensure_experiment(client, self.experiment, sqlite_artifact_location(self.tracking_uri))
            run_id = self._find_created_run(exp_id) if self._create_attempted else None
            if run_id is None:
                tags = dict(self.tags)
                tags[SPOOL_ID_TAG] = self.spool_id
                if self.parent_run_id:
                    tags[PARENT_RUN_TAG] = self.parent_run_id
                self._create_attempted = True
                self._write_run_file()     # before sending: a process killed mid-request looks it up next time
                with self.gate.slot():
                    run_id = client.create_run(exp_id, run_name=self.run_name, tags=tags).info.run_id
            self._run_id = run_id
            self._write_run_file()
        elif self._resumed:
            with self.gate.slot():
                client.update_run(self._run_id, status="RUNNING")
            self._resumed = False
        return self._run_id

    def _find_created_run(self, exp_id: str) -> str | None:
        """The run an earlier create_run made although its answer never came back (a timeout, a killed process)."""
        with self.gate.slot():
            runs = self.client().search_runs([exp_id], filter_string=f"tags.`{SPOOL_ID_TAG}` = '{self.spool_id}'",
                                             max_results=2)
        if runs:
            log.info("MLflow run %s found by its spool id (an earlier create_run answer was lost)",
                     runs[0].info.run_id)
        return runs[0].info.run_id if runs else None

    # ---- public API (never blocks on the network)
    def start(self, wait: float = 5.0) -> "RunTracker":
        """Start the flusher. Tries to create/reopen the run for up to `wait` seconds; training goes on either way."""
        deadline = time.time() + wait
        while True:
            try:
                self._ensure_run()
                break
            except Exception as exc:
                self.last_error = repr(exc)
                if time.time() > deadline or not is_retryable(exc):
                    log.warning("MLflow at %s not reachable (%s); spooling to %s", self.tracking_uri, exc, self.spool_dir)
                    break
                time.sleep(0.5)
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="mlflow-spool", daemon=True)
            self._thread.start()
        return self

    def _append(self, op: dict[str, Any]) -> None:
        line = json.dumps(op, default=str) + "\n"
        with self._lock:
            with (self.spool_dir / SPOOL_FILE).open("a") as fh:
                fh.write(line)
                fh.flush()

    def log_params(self, params: dict[str, Any]) -> dict[str, str]:
        """Log params (truncated to MAX_PARAM_LEN); returns the full values of the truncated ones."""
        clean, full = truncate_params(params)
        if clean:
            self._append({"op": "params", "data": clean})
        if full:
            self._append({"op": "tags", "data": {f"param_full.{k}": v[:MAX_TAG_LEN] for k, v in full.items()}})
        return full

    def set_tags(self, tags: dict[str, Any]) -> None:
        if tags:
            self._append({"op": "tags", "data": clip_tags(tags)})

    def log_metrics(self, metrics: dict[str, float], step: int, timestamp_ms: int | None = None) -> None:
        ts = timestamp_ms or int(time.time() * 1000)
        rows = []
        for key, value in metrics.items():
            try:
                rows.append([key, float(value), ts, int(step)])
            except (TypeError, ValueError):
                continue
        if rows:
            self._append({"op": "metrics", "data": rows})

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        self._append({"op": "artifact", "path": str(Path(local_path).resolve()), "artifact_path": artifact_path})

    def log_text(self, text: str, name: str, artifact_path: str | None = None) -> None:
        """Write `text` into the spool dir (kept until sent) and log it as an artifact."""
        folder = self.spool_dir / "files" / (artifact_path or "")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
        self.log_artifact(folder / name, artifact_path)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything spooled so far is sent; False if the server stayed unreachable."""
        end_target = self._spool_size()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self._offset() >= end_target and self._run_id is not None:
                return True
            if self.fatal_error is not None:
                return False
            if self._thread is None or not self._thread.is_alive():
                try:
                    self._drain_once()
                except _RunUnavailable:
                    return False
                except Exception as exc:   # transient, or an unknown error still under its retry bound
                    self.last_error = repr(exc)
                    time.sleep(jittered(0.5, self.gate.settings.jitter))
            else:
                self._wake.set()
            time.sleep(0.1)
        return self._offset() >= end_target and self._run_id is not None

    def close(self, status: str = "FINISHED", timeout: float = 120.0) -> bool:
        """Mark the run terminated and wait (up to `timeout`) for the spool to drain."""
        self._append({"op": "terminate", "status": status})
        ok = self.flush(timeout)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not ok:
            log.warning("MLflow run %s: %d bytes still spooled in %s (%s); replay with "
                        "`python -m tracking replay %s`", self._run_id, self.pending_bytes(),
                        self.spool_dir, self.fatal_error or f"server unreachable: {self.last_error}", self.spool_dir)
        if self.rejected_ops:
            log.warning("MLflow run %s: %d operation(s) were rejected; see %s", self._run_id, self.rejected_ops,
                        self.spool_dir / REJECTED_FILE)
        return ok

    def pending_bytes(self) -> int:
        return max(0, self._spool_size() - self._offset())

    # ---- the flusher
    def _spool_size(self) -> int:
        path = self.spool_dir / SPOOL_FILE
        return path.stat().st_size if path.exists() else 0

    def _offset(self) -> int:
        path = self.spool_dir / OFFSET_FILE
        try:
            return int(path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _set_offset(self, offset: int) -> None:
        tmp = self.spool_dir / (OFFSET_FILE + ".tmp")
        tmp.write_text(str(offset))
        os.replace(tmp, self.spool_dir / OFFSET_FILE)

    def _loop(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._latency = 0.0
                self._drain_once()
                backoff = 0.5
                if self._failing:
                    log.info("MLflow at %s reachable again; spool %s draining", self.tracking_uri, self.spool_dir)
                    self._failing = False
                # a slow server gets fewer, larger batches (tracking.sender); flush() wakes the loop at once
                self._wake.wait(self.gate.next_wait(self.flush_interval, self._latency))
            except _RunUnavailable:
                self._stop.wait()          # reported once; the spool stays for `replay`
            except Exception as exc:       # transient (or unknown, under its bound): back off and try again
                self.last_error = repr(exc)
                if not self._failing:
                    log.warning("MLflow at %s failed (%s: %s); spooling to %s and retrying with backoff",
                                self.tracking_uri, type(exc).__name__, str(exc)[:300], self.spool_dir)
                    self._failing = True
                else:
                    log.debug("MLflow flush failed: %s (retry in %.1fs)", exc, backoff)
                # the stop event, not the wake one: a flush() waiting for the drain must not cut the backoff short
                # (that made every waiting trial retry ten times a second against a struggling server)
                self._stop.wait(jittered(backoff, self.gate.settings.jitter))
                backoff = min(backoff * 2, self.max_backoff)
            self._wake.clear()

    def _count_unknown(self, where: Any) -> int:
        """How many times an UNKNOWN error hit at `where` (this one included)."""
        n = self._unknown[1] + 1 if self._unknown[0] == where else 1
        self._unknown = (where, n)
        return n

    def _run_for_drain(self) -> str:
        """The run id, creating/reopening the run; a permanent (or too often unknown) failure is fatal."""
        try:
            run_id = self._ensure_run()
        except Exception as exc:
            kind = classify_error(exc)
            if kind == TRANSIENT or (kind == UNKNOWN and self._count_unknown("run") < self.max_unknown_attempts):
                raise
            self.fatal_error = f"{type(exc).__name__}: {str(exc)[:500]}"
            self.last_error = repr(exc)
            log.error("MLflow run for %s cannot be %s at %s (%s); nothing more is sent. The spool is kept: fix "
                      "the server or pass another one with `python -m tracking replay %s "
                      "--tracking-uri URI`", self.spool_dir, "reopened" if self._run_id else "created",
                      self.tracking_uri, self.fatal_error, self.spool_dir)
            raise _RunUnavailable(self.fatal_error) from exc
        if self._unknown[0] == "run":
            self._unknown = (None, 0)
        return run_id

    def _drain_once(self) -> None:
        with self._drain_lock:
            if self.fatal_error is not None:
                raise _RunUnavailable(self.fatal_error)
            offset = self._offset()
            path = self.spool_dir / SPOOL_FILE
            if not path.exists() or path.stat().st_size <= offset:
                if self._run_id is None or self._resumed:
                    self._run_for_drain()
                return
            run_id = self._run_for_drain()
            with path.open("rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
            # only complete lines
            end = chunk.rfind(b"\n") + 1
            lines = chunk[:end].splitlines(keepends=True)
            pos = offset
            i = 0
            while i < len(lines):
                op, why = _parse_line(lines[i])
                size, j = len(lines[i]), i + 1
                if op is None:
                    self._reject_line(lines[i], pos, why)
                else:
                    if op["op"] == "metrics":  # coalesce consecutive (well-formed) metric ops into one batch
                        rows = list(op["data"])
                        while j < len(lines) and len(rows) < METRICS_PER_BATCH:
                            nxt, _ = _parse_line(lines[j])
                            if nxt is None or nxt["op"] != "metrics" or len(rows) + len(nxt["data"]) > METRICS_PER_BATCH:
                                break
                            rows.extend(nxt["data"])
                            size += len(lines[j])
                            j += 1
                        op = {"op": "metrics", "data": rows}
                    if op["op"] == "metrics":
                        op = self._with_backlog_tag(op, path, pos + size)
                    self._deliver(run_id, op, pos)   # raises to back off (transient / unknown under its bound)
                    self.sent_ops += 1
                pos += size
                i = j
                self._set_offset(pos)

    def _with_backlog_tag(self, op: dict[str, Any], path: Path, end: int) -> dict[str, Any]:
        """Back-pressure made visible: while the unsent bytes after this batch exceed `backlog_warn_bytes`, the
        batch also sets the run's BACKLOG_TAG (one WARNING when the backlog appears, one INFO when it is gone)."""
        limit = self.gate.settings.backlog_warn_bytes
        if limit <= 0:
            return op
        left = max(0, path.stat().st_size - end)
        if left > limit:
            if not self._backlog_reported:
                log.warning("MLflow run %s: %d KiB not yet sent from %s (the server at %s is slower than this "
                            "trial); nothing is lost, the spool drains in larger batches", self._run_id,
                            left // 1024, self.spool_dir, self.tracking_uri)
            self._backlog_reported = True
            return {**op, "backlog": left}
        if self._backlog_reported:
            log.info("MLflow run %s: spool backlog drained", self._run_id)
            self._backlog_reported = False
            return {**op, "backlog": 0}
        return op

    def _deliver(self, run_id: str, op: dict[str, Any], offset: int) -> None:
        """Send one op; reject it (and move on) when the answer is permanent or an unknown error repeats."""
        try:
            self._send(run_id, op)
        except Exception as exc:
            kind = classify_error(exc)
            if kind == TRANSIENT:
                raise
            if kind == UNKNOWN:
                n = self._count_unknown(offset)
                if n < self.max_unknown_attempts:
                    raise
                self._reject(op, exc, f"unknown error, {n} attempts", level=logging.ERROR)
            else:
                self._deliver_items(run_id, op, exc)
        self._unknown = (None, 0)

    def _deliver_items(self, run_id: str, op: dict[str, Any], exc: BaseException) -> None:
        """A batch refused as a whole: send its items one by one so that only the bad ones are rejected.
        (A transient failure in the middle re-sends the whole batch later: params and tags are idempotent, and
        MLflow's SQL store ignores metric points it already holds.)"""
        kind = op["op"]
        if kind == "metrics" and len(op["data"]) > 1:
            items = [{"op": kind, "data": [row]} for row in op["data"]]
        elif kind in ("params", "tags") and len(op["data"]) > 1:
            items = [{"op": kind, "data": {k: v}} for k, v in op["data"].items()]
        else:
            self._reject(op, exc, "rejected by the server")
            return
        for item in items:
            try:
                self._send(run_id, item)
            except Exception as item_exc:
                if classify_error(item_exc) == TRANSIENT:
                    raise
                self._reject(item, item_exc, "rejected by the server")

    def _send(self, run_id: str, op: dict[str, Any]) -> None:
        """One op, through the process's gate (bounded requests in flight; congestion pauses every spool)."""
        tic = time.monotonic()       # from before the slot: the process's own queue is part of the server's answer
        with self.gate.slot(self._stop):
            try:
                self._send_now(run_id, op)
            except Exception as exc:
                if is_congestion(exc):
                    pause = self.gate.congested()
                    log.debug("MLflow at %s congested (%s); this process pauses %.1fs", self.tracking_uri, exc, pause)
                raise
            finally:
                self._latency = max(self._latency, time.monotonic() - tic)
        self.gate.succeeded()

    def _send_now(self, run_id: str, op: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag  # late: mlflow (~1.6 s) loads on first use (client.py)

        client = self.client()
        kind = op["op"]
        if kind == "metrics":
            metrics = [Metric(k, v, ts, step) for k, v, ts, step in op["data"]]
            tags = [RunTag(BACKLOG_TAG, str(op["backlog"]))] if "backlog" in op else []
            client.log_batch(run_id, metrics=metrics, tags=tags)
        elif kind == "params":
            items = list(op["data"].items())
            for i in range(0, len(items), PARAMS_PER_BATCH):
                client.log_batch(run_id, params=[Param(k, v) for k, v in items[i:i + PARAMS_PER_BATCH]])
        elif kind == "tags":
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in op["data"].items()])
        elif kind == "artifact":
            if not Path(op["path"]).exists():
                raise FileNotFoundError(f"artifact file is gone: {op['path']}")
            if Path(op["path"]).is_dir():
                client.log_artifacts(run_id, op["path"], op.get("artifact_path"))
            else:
                client.log_artifact(run_id, op["path"], op.get("artifact_path"))
        elif kind == "terminate":
            client.set_terminated(run_id, op.get("status", "FINISHED"))

    def _write_rejected(self, entry: dict[str, Any]) -> None:
        self.rejected_ops += 1
        with (self.spool_dir / REJECTED_FILE).open("a") as fh:
            fh.write(json.dumps(entry, default=str) + "\n")

    def _reject(self, op: dict[str, Any], exc: BaseException, reason: str, level: int = logging.WARNING) -> None:
        what = _describe(op)
        log.log(level, "MLflow run %s: %s dropped from the spool (%s: %s: %s); kept in %s", self._run_id, what,
                reason, type(exc).__name__, str(exc)[:500], self.spool_dir / REJECTED_FILE)
        self._write_rejected({"time": time.time(), "run_id": self._run_id, "reason": reason,
                              "error": f"{type(exc).__name__}: {str(exc)[:2000]}", "op": op})

    def _reject_line(self, line: bytes, offset: int, why: str) -> None:
        text = line.decode("utf-8", errors="replace").rstrip("\n")
        log.warning("MLflow spool %s: malformed line at byte %d skipped (%s): %.200s; kept in %s",
                    self.spool_dir / SPOOL_FILE, offset, why, text, self.spool_dir / REJECTED_FILE)
        self._write_rejected({"time": time.time(), "run_id": self._run_id, "reason": f"malformed spool line: {why}",
                              "offset": offset, "line": text})

    def last_logged_step(self, key: str) -> int | None:
        """The highest step MLflow holds for metric `key` in this run (None: no point yet, or no run yet).
        Call after `flush()`: points still spooled are not counted. Raises if the server cannot be reached."""
        if self._run_id is None:
            return None
        history = retry(lambda: self.client().get_metric_history(self._run_id, key), what="read metric history")
        return max((int(m.step) for m in history), default=None)


_OPS = ("metrics", "params", "tags", "artifact", "terminate")


def _parse_line(line: bytes) -> tuple[dict[str, Any] | None, str]:
    """(op, "") for a well-formed spool line, else (None, why)."""
    try:
        op = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"not JSON ({exc})"
    if not isinstance(op, dict) or op.get("op") not in _OPS:
        return None, f"no known 'op' (expected one of {', '.join(_OPS)})"
    data = op.get("data")
    kind = op["op"]
    if kind == "metrics":
        ok = isinstance(data, list) and all(
            isinstance(r, list) and len(r) == 4 and isinstance(r[0], str) and isinstance(r[1], (int, float))
            and isinstance(r[2], int) and isinstance(r[3], int) for r in data)
        if not ok:
            return None, "metrics 'data' must be a list of [key, value, timestamp_ms, step]"
    elif kind in ("params", "tags"):
        if not (isinstance(data, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in data.items())):
            return None, f"{kind} 'data' must map strings to strings"
    elif kind == "artifact" and not isinstance(op.get("path"), str):
        return None, "artifact without a 'path'"
    elif kind == "terminate" and not isinstance(op.get("status", "FINISHED"), str):
        return None, "terminate 'status' must be a string"
    return op, ""


def _describe(op: dict[str, Any]) -> str:
    kind = op.get("op")
    if kind == "metrics":
        keys = sorted({r[0] for r in op["data"]})
        steps = [r[3] for r in op["data"]]
        return f"{len(op['data'])} metric point(s) {keys[:5]} at step(s) {min(steps)}..{max(steps)}"
    if kind in ("params", "tags"):
        return f"{kind} {dict(list(op['data'].items())[:5])}"
    if kind == "artifact":
        return f"artifact {op.get('path')}"
    return f"{kind} {op.get('status', '')}".strip()


def replay(spool_dir: str | Path, tracking_uri: str | None = None, timeout: float = 60.0) -> bool:
    """Send whatever a spool still holds (e.g. after the server was down when a trial ended)."""
    spool_dir = Path(spool_dir)
    info = json.loads((spool_dir / RUN_FILE).read_text()) if (spool_dir / RUN_FILE).is_file() else {}
    uri = tracking_uri or info.get("tracking_uri")
    if not uri:
        raise ValueError(f"{spool_dir}: no tracking URI recorded; pass --tracking-uri")
    tracker = RunTracker(uri, info.get("experiment", "Default"), spool_dir=spool_dir, run_id=info.get("run_id"),
                         parent_run_id=info.get("parent_run_id"), run_name=info.get("run_name"),
                         tags=info.get("tags"))
    tracker._resumed = False
    return tracker.flush(timeout)

