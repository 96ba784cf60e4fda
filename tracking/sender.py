"""The process-wide sending policy of every spool (tracking.spool.RunTracker) in one process.

Where the time went when many trials shared one tracking server (issue 19): every trial's spool sent on its own,
as soon as it could, with a 10 s read timeout; a slow server (SQLite's one write lock) made requests time out
while the server still executed them, and every retry came back at once, on top of the abandoned work: a
congestion collapse. The policy here:

- **Bounded concurrency per process**: at most `max_in_flight` MLflow requests of this process's spools are in
  flight to one server at a time (`SendGate.slot`), however many trials the process hosts.
- **Bounded concurrency per node**: with `max_in_flight_per_node` > 0, the processes of one machine (Ray starts
  one worker process per concurrent trial) share that many slots for one server: `NodeSlots`, lock files in
  `node_slot_dir` held with `flock`, which the kernel releases when a holder dies, so a killed worker never
  keeps a slot.
- **One congestion signal for the process**: a timeout, a 503/429 or a lock error seen by any spool pauses every
  spool of the process for an exponentially growing, jittered delay (`SendGate.congested`); the first success
  resets it. Jitter spreads the processes of a cluster apart so that they do not come back in lock-step.
- **A patient timeout**: MLflow's HTTP read timeout defaults to 60 s instead of 10 s (tracking.env), so a request
  the server is still executing is not abandoned and sent again while the server works on the first copy.
  Re-sending is nevertheless safe: MLflow's SQL store drops a metric point that already exists with the same
  (key, timestamp, step, value) (its primary key; verified by tests/test_tracking_sender.py on SQLite and
  PostgreSQL), params and tags are idempotent, and a run creation is looked up by its spool id before it is
  created again (tracking.spool).
- **Larger batches under load**: a spool waits `flush_interval` between drains, stretched to `latency_factor`
  times its last request's latency (capped at `max_flush_interval_s`): a slow server gets fewer, larger batches
  (up to MLflow's 1,000 points per `log_batch`) instead of more requests. The latency counts from before the
  request waits for one of the process's slots: a saturated server shows first as the process's own queue (many
  trials, a few slots), and a request's cost on the server is mostly per request (about 13 ms for 80 points, 27
  ms for 400, docs/benchmarks.md), so larger batches are what lets it keep up.

MLflow's `log_batch` takes ONE run id: there is no request that carries several runs, so the trials of one
process cannot share a batch; the gate bounds their requests instead.

Every knob is a field of `SenderSettings`, read from the environment (`TRACKING_<FIELD>`, e.g.
`TRACKING_MAX_IN_FLIGHT=2`), so a sweep's runtime environment can set them for every worker.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import random
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

from pydantic import BaseModel, ConfigDict, Field, ValidationError

ENV_PREFIX = "TRACKING_"


class SenderSettings(BaseModel):
    """How the spools of one process talk to a tracking server (env: TRACKING_<FIELD IN CAPITALS>)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_in_flight: int = Field(4, ge=1, le=256, description="concurrent MLflow requests per process and server")
    backoff_first_s: float = Field(0.5, gt=0, description="first pause after a congestion signal")
    backoff_max_s: float = Field(30.0, gt=0, description="longest pause after repeated congestion signals")
    jitter: float = Field(0.5, ge=0, le=1, description="pauses are stretched by a random factor in [1, 1+jitter]")
    latency_factor: float = Field(2.0, ge=0, le=100,
                                  description="wait this many times the last request's latency between drains")
    max_flush_interval_s: float = Field(20.0, gt=0, description="upper bound of the stretched drain interval")
    max_in_flight_per_node: int = Field(0, ge=0, le=4096,
                                        description="concurrent MLflow requests of all processes of this machine "
                                                    "and one server (0 = no node-wide bound)")
    node_slot_dir: str = Field("/tmp/sgf-tracking-slots",
                               description="node-local folder of the per-node slot lock files")
    backlog_warn_bytes: int = Field(512 * 1024, ge=0,
                                    description="a spool holding more unsent bytes logs a WARNING and tags its run "
                                                "(tracking.spool_backlog_bytes); 0 turns the report off")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "SenderSettings":
        env = os.environ if environ is None else environ
        values = {name: env[ENV_PREFIX + name.upper()] for name in cls.model_fields
                  if env.get(ENV_PREFIX + name.upper())}
        try:
            return cls(**values)
        except ValidationError as exc:
            bad = ", ".join(f"{ENV_PREFIX}{str(e['loc'][0]).upper()}={values.get(e['loc'][0])!r} ({e['msg']})"
                            for e in exc.errors())
            raise ValueError(f"invalid tracking sender setting(s) in the environment: {bad}; fix or unset them "
                             f"(fields: {', '.join(ENV_PREFIX + n.upper() for n in cls.model_fields)})") from exc


def jittered(delay: float, jitter: float, rng: random.Random | None = None) -> float:
    """`delay` stretched by a random factor in [1, 1 + jitter]."""
    return delay * (1.0 + jitter * (rng or random).random())


class NodeSlots:
    """`count` request slots shared by every process of one machine for one tracking server: lock files
    `<dir>/<server digest>/slot-<i>.lock` taken with a non-blocking `flock`; a process that dies releases its
    slot (the kernel drops its locks). Waiting polls with a short jittered sleep."""

    def __init__(self, count: int, directory: str | os.PathLike, server: str, poll_s: float = 0.02):
        self.count = count
        self.dir = Path(directory) / hashlib.sha256(server.encode()).hexdigest()[:16]
        self.poll_s = poll_s

    @contextmanager
    def slot(self, stop: threading.Event | None = None) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        start = random.randrange(self.count)       # processes start their scan at different slots
        while True:
            for i in range(self.count):
                fd = os.open(self.dir / f"slot-{(start + i) % self.count}.lock", os.O_CREAT | os.O_RDWR, 0o666)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)
                return
            if stop is not None and stop.is_set():
                yield                              # shutting down: the last drain goes out unbounded
                return
            time.sleep(jittered(self.poll_s, 1.0))


class SendGate:
    """Bounded concurrency and a shared congestion pause for the spools of one process and one server (and, with
    `max_in_flight_per_node`, of every process of the machine: `NodeSlots`)."""

    def __init__(self, settings: SenderSettings, server: str = ""):
        self.settings = settings
        self._node = (NodeSlots(settings.max_in_flight_per_node, settings.node_slot_dir, server)
                      if settings.max_in_flight_per_node else None)
        self._slots = threading.BoundedSemaphore(settings.max_in_flight)
        self._lock = threading.Lock()
        self._pause_until = 0.0
        self._strikes = 0              # congestion signals since the last success
        self.in_flight = 0
        self.max_seen_in_flight = 0    # for tests and the benchmark
        self.congestion_signals = 0

    def pause_left(self) -> float:
        with self._lock:
            return max(0.0, self._pause_until - time.monotonic())

    @contextmanager
    def slot(self, stop: threading.Event | None = None) -> Iterator[None]:
        """Wait out a congestion pause, then hold one of `max_in_flight` slots for one request."""
        while (left := self.pause_left()) > 0:
            if stop is not None and stop.wait(min(left, 1.0)):
                break
            if stop is None:
                time.sleep(min(left, 1.0))
        self._slots.acquire()
        try:
            with (self._node.slot(stop) if self._node is not None else nullcontext()):
                with self._lock:
                    self.in_flight += 1
                    self.max_seen_in_flight = max(self.max_seen_in_flight, self.in_flight)
                try:
                    yield
                finally:
                    with self._lock:
                        self.in_flight -= 1
        finally:
            self._slots.release()

    def congested(self) -> float:
        """A congestion signal (timeout, 503/429, lock): pause every spool of the process; returns the pause."""
        s = self.settings
        with self._lock:
            self._strikes += 1
            self.congestion_signals += 1
            delay = jittered(min(s.backoff_first_s * 2 ** (self._strikes - 1), s.backoff_max_s), s.jitter)
            self._pause_until = max(self._pause_until, time.monotonic() + delay)
            return delay

    def succeeded(self) -> None:
        with self._lock:
            self._strikes = 0

    def next_wait(self, flush_interval: float, latency: float) -> float:
        """How long a spool waits before its next drain, given its last request's latency."""
        s = self.settings
        return max(flush_interval, min(latency * s.latency_factor, s.max_flush_interval_s))


_gates: dict[str, SendGate] = {}
_gates_lock = threading.Lock()


def gate_for(tracking_uri: str) -> SendGate:
    """The process's one gate for `tracking_uri` (settings read from the environment on first use)."""
    with _gates_lock:
        gate = _gates.get(tracking_uri)
        if gate is None:
            gate = _gates[tracking_uri] = SendGate(SenderSettings.from_env(), tracking_uri)
        return gate


def is_congestion(exc: BaseException) -> bool:
    """A sign that the server (not this request) is the problem: a timeout, 503, 429, a locked/busy store."""
    # late: mlflow (about 1 s, with requests) loads on first use, not when tracking is imported
    import requests
    from mlflow.exceptions import MlflowException

    text = str(exc).lower()
    if any(t in text for t in ("timed out", "database is locked", "temporarily unavailable",
                               "too many requests", "queuepool limit")):
        return True
    if isinstance(exc, requests.Timeout):
        return True
    status = None
    if isinstance(exc, MlflowException):
        status = exc.get_http_status_code()
    elif isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
    return status in (429, 503, 504)
