"""The MLflow spool cannot wedge: every failure class has one fate, and trackers drain independently.

A REAL `mlflow server` on 127.0.0.1 answers the permanent errors (a changed param, an invalid metric name, a run
that does not exist). Transient failures are real too: a TCP front on 127.0.0.1 that is first absent
(connection refused) or answers HTTP 503, then forwards to the server. Only the "unknown exception" class uses
a fault-injecting wrapper around the real client (MLflow cannot be made to raise an arbitrary exception type).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import threading
from pathlib import Path

import pytest

from tracking import REJECTED_FILE, SPOOL_FILE, RunTracker

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
pytestmark = pytest.mark.slow


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _rejected(spool: Path) -> list[dict]:
    path = spool / REJECTED_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _steps(uri, run_id, key):
    return sorted(m.step for m in _client(uri).get_metric_history(run_id, key))


def _tracker(uri, spool, **kw):
    kw.setdefault("flush_interval", 0.05)
    kw.setdefault("max_backoff", 0.2)
    return RunTracker(uri, "spool-tests", spool_dir=spool, run_name=spool.name, **kw)


# ------------------------------------------------------------------------------------------------ permanent
def test_changed_param_is_rejected_alone_and_the_spool_moves_on(server, tmp_path, caplog):
    spool = tmp_path / "changed_param"
    tracker = _tracker(server.url, spool).start()
    tracker.log_params({"seed": 1, "lr": 0.1})
    assert tracker.flush(60), tracker.last_error
    with caplog.at_level(logging.WARNING, logger="tracking"):
        tracker.log_params({"seed": 2, "extra": "x"})      # seed changed: INVALID_PARAMETER_VALUE (400)
        for step in (1, 2, 3):
            tracker.log_metrics({"loss": 1.0 / step}, step=step)
        assert tracker.close("FINISHED", timeout=60), tracker.last_error
    run = _client(server.url).get_run(tracker.run_id)
    assert run.data.params == {"seed": "1", "lr": "0.1", "extra": "x"}   # the good half of the batch arrived
    assert run.info.status == "FINISHED"
    assert _steps(server.url, tracker.run_id, "loss") == [1, 2, 3]
    rejected = _rejected(spool)
    assert [r["op"] for r in rejected] == [{"op": "params", "data": {"seed": "2"}}]
    assert "INVALID_PARAMETER_VALUE" in rejected[0]["error"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("seed" in w and "INVALID_PARAMETER_VALUE" in w for w in warnings), warnings
    assert tracker.pending_bytes() == 0 and tracker.rejected_ops == 1


def test_invalid_metric_name_and_missing_artifact_are_rejected(server, tmp_path):
    spool = tmp_path / "bad_metric"
    tracker = _tracker(server.url, spool).start()
    tracker.log_metrics({"ok": 1.0, "../up": 2.0}, step=1)      # MLflow refuses names that escape a folder
    gone = tmp_path / "grid.png"
    gone.write_bytes(b"png")
    tracker.log_artifact(gone, "samples")
    gone.unlink()                                              # removed before the flusher got to it
    tracker.log_metrics({"ok": 3.0}, step=2)
    assert tracker.close("FINISHED", timeout=60), tracker.last_error
    assert _steps(server.url, tracker.run_id, "ok") == [1, 2]
    rejected = _rejected(spool)
    assert len(rejected) == 2, rejected
    assert rejected[0]["op"]["data"][0][0] == "../up" and "INVALID_PARAMETER_VALUE" in rejected[0]["error"]
    assert rejected[1]["op"]["op"] == "artifact" and rejected[1]["error"].startswith("FileNotFoundError")
    assert _client(server.url).list_artifacts(tracker.run_id, "samples") == []


def test_run_that_does_not_exist_stops_sending_and_keeps_the_spool(server, tmp_path, caplog):
    spool = tmp_path / "no_run"
    tracker = _tracker(server.url, spool, run_id="0" * 32)   # a resumed run id unknown to this server
    with caplog.at_level(logging.ERROR, logger="tracking"):
        tracker.start(wait=10)
        tracker.log_metrics({"loss": 1.0}, step=1)
        assert not tracker.close("FINISHED", timeout=60)
    assert "RESOURCE_DOES_NOT_EXIST" in (tracker.fatal_error or "")
    assert tracker.pending_bytes() > 0 and _rejected(spool) == []        # nothing dropped: kept for `replay`
    assert any("replay" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


# ------------------------------------------------------------------------------------------------ malformed
def test_malformed_lines_are_rejected_and_the_valid_ones_delivered(server, tmp_path, caplog):
    spool = tmp_path / "malformed"
    spool.mkdir()
    good = lambda step: json.dumps({"op": "metrics", "data": [["m", float(step), 1_700_000_000_000, step]]})  # noqa: E731
    lines = [good(1), "not json at all", json.dumps({"op": "frobnicate"}),
             json.dumps({"op": "metrics", "data": [["m", "NaN-as-text", 0, 2]]}), good(3),
             json.dumps({"op": "terminate", "status": "FINISHED"})]
    (spool / SPOOL_FILE).write_text("\n".join(lines) + "\n")
    tracker = _tracker(server.url, spool)        # no flusher thread: flush drains inline
    with caplog.at_level(logging.WARNING, logger="tracking"):
        assert tracker.flush(60), tracker.last_error
    assert _steps(server.url, tracker.run_id, "m") == [1, 3]
    assert _client(server.url).get_run(tracker.run_id).info.status == "FINISHED"
    rejected = _rejected(spool)
    assert [r["line"] for r in rejected] == lines[1:4]
    assert all(r["reason"].startswith("malformed spool line") for r in rejected)
    assert sum("malformed line" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING) == 3


def test_fragment_left_by_a_dead_writer_does_not_spoil_the_next_op(server, tmp_path):
    spool = tmp_path / "fragment"
    spool.mkdir()
    whole = json.dumps({"op": "metrics", "data": [["m", 1.0, 1_700_000_000_000, 1]]})
    (spool / SPOOL_FILE).write_text(whole + '\n{"op": "metrics", "da')     # the writer died mid-line
    tracker = _tracker(server.url, spool)                                   # the retried process reopens it
    tracker.log_metrics({"m": 2.0}, step=2)
    assert tracker.flush(60), tracker.last_error
    assert _steps(server.url, tracker.run_id, "m") == [1, 2]
    assert [r["line"] for r in _rejected(spool)] == ['{"op": "metrics", "da']


# ------------------------------------------------------------------------------------------------ transient
class FlakyFront:
    """A TCP front for the MLflow server on 127.0.0.1: absent (connection refused), answering 503, or forwarding."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.mode = "refuse"
        self.requests = 0
        self._srv: socketserver.ThreadingTCPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def listen(self, mode: str) -> None:
        self.mode = mode
        if self._srv is not None:
            return
        front = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                front.requests += 1
                if front.mode == "503":
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = self.request.recv(65536)
                        if not chunk:
                            return
                        data += chunk
                    self.request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                         b"Connection: close\r\n\r\n")
                    return
                up = socket.create_connection(("127.0.0.1", front.upstream_port))
                pump = threading.Thread(target=_pipe, args=(up, self.request), daemon=True)
                pump.start()
                _pipe(self.request, up)
                pump.join(30)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._srv = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        self._srv.daemon_threads = True
        threading.Thread(target=self._srv.serve_forever, daemon=True).start()

    def close(self) -> None:
        if self._srv is not None:
            self._srv.shutdown()
            self._srv.server_close()
            self._srv = None


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


@pytest.mark.parametrize("failure", ["refuse", "503"])
def test_transient_failures_are_retried_until_delivered_never_rejected(server, tmp_path, failure):
    front = FlakyFront(server.port)
    if failure == "503":
        front.listen("503")
    spool = tmp_path / f"transient_{failure}"
    # max_unknown_attempts=1: were a transient failure mistaken for an unknown one, it would be rejected at once
    tracker = _tracker(front.url, spool, max_unknown_attempts=1)
    try:
        tracker.start(wait=0.5)
        tracker.log_params({"seed": 7})
        for step in range(1, 6):
            tracker.log_metrics({"loss": float(step)}, step=step)
        assert not tracker.flush(3)
        assert tracker.run_id is None and tracker.pending_bytes() > 0
        assert _rejected(spool) == [] and tracker.fatal_error is None
        if failure == "503":
            assert front.requests > 1 and "503" in (tracker.last_error or "")      # it kept asking
        else:
            assert "refused" in (tracker.last_error or "").lower() or "max retries" in (tracker.last_error or "").lower()
        front.listen("forward")                                  # the server is back
        assert tracker.close("FINISHED", timeout=60), tracker.last_error
    finally:
        front.close()
    assert _steps(server.url, tracker.run_id, "loss") == [1, 2, 3, 4, 5]   # each point exactly once
    run = _client(server.url).get_run(tracker.run_id)
    assert run.data.params == {"seed": "7"} and run.info.status == "FINISHED"
    assert _rejected(spool) == []


# ------------------------------------------------------------------------------------------------ unknown
class FaultyClient:
    """Fault injection (a mock, on purpose): the real client, except that `log_batch` calls carrying the metric
    `poison` raise an exception MLflow never raises, `fail_times` times (None: always)."""

    def __init__(self, real, fail_times: int | None):
        self.real, self.fail_times, self.poison_calls = real, fail_times, 0

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        if any(m.key == "poison" for m in metrics):
            self.poison_calls += 1
            if self.fail_times is None or self.poison_calls <= self.fail_times:
                raise RuntimeError("injected: something nobody classified")
        return self.real.log_batch(run_id, metrics=metrics, params=params, tags=tags)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_unknown_exception_is_retried_a_bounded_number_of_times_then_rejected(server, tmp_path, caplog):
    spool = tmp_path / "unknown_always"
    tracker = _tracker(server.url, spool, max_unknown_attempts=3)
    faulty = FaultyClient(_client(server.url), fail_times=None)
    tracker._client = faulty
    with caplog.at_level(logging.WARNING, logger="tracking"):
        tracker.start()
        tracker.log_metrics({"poison": 1.0}, step=1)
        assert tracker.flush(60), tracker.last_error       # given up on, so the spool is drained
        tracker.log_metrics({"fine": 2.0}, step=2)
        assert tracker.close("FINISHED", timeout=60), tracker.last_error
    assert faulty.poison_calls == 3
    assert _steps(server.url, tracker.run_id, "fine") == [2]
    assert _steps(server.url, tracker.run_id, "poison") == []
    rejected = _rejected(spool)
    assert len(rejected) == 1 and rejected[0]["op"]["data"][0][0] == "poison"
    assert rejected[0]["error"].startswith("RuntimeError: injected") and "3 attempts" in rejected[0]["reason"]
    assert any(r.levelno == logging.ERROR and "poison" in r.getMessage() for r in caplog.records)


def test_unknown_exception_that_clears_up_is_delivered(server, tmp_path):
    spool = tmp_path / "unknown_twice"
    tracker = _tracker(server.url, spool, max_unknown_attempts=5)
    faulty = FaultyClient(_client(server.url), fail_times=2)
    tracker._client = faulty
    tracker.start()
    tracker.log_metrics({"poison": 1.0}, step=1)
    assert tracker.close("FINISHED", timeout=60), tracker.last_error
    assert faulty.poison_calls == 3
    assert _steps(server.url, tracker.run_id, "poison") == [1]
    assert _rejected(spool) == []


# ------------------------------------------------------------------------------------------------ isolation
class BlockingClient(FaultyClient):
    """The real client, except that metric batches block until `gate` opens (a server that hangs)."""

    def __init__(self, real):
        super().__init__(real, fail_times=0)
        self.entered, self.gate = threading.Event(), threading.Event()

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        if metrics:
            self.entered.set()
            assert self.gate.wait(120), "test gate never opened"
        return self.real.log_batch(run_id, metrics=metrics, params=params, tags=tags)


def test_two_trackers_in_one_process_drain_independently(server, tmp_path):
    stuck = _tracker(server.url, tmp_path / "stuck")
    blocking = BlockingClient(_client(server.url))
    stuck._client = blocking
    stuck.start()
    stuck.log_metrics({"a": 1.0}, step=1)
    assert blocking.entered.wait(60), "the first tracker never reached the server"
    try:
        free = _tracker(server.url, tmp_path / "free").start()
        free.log_metrics({"b": 1.0}, step=1)
        assert free.close("FINISHED", timeout=60), "the second tracker waited on the first one's drain"
        assert not blocking.gate.is_set() and stuck.pending_bytes() > 0    # the first is still stuck meanwhile
        assert _steps(server.url, free.run_id, "b") == [1]
    finally:
        blocking.gate.set()
    assert stuck.close("FINISHED", timeout=60), stuck.last_error
    assert _steps(server.url, stuck.run_id, "a") == [1]
