"""The one retry policy of every MLflow call: `classify_error` decides, `retry` (driver side) and the spool's
backoff (trial side, tracking.spool) act on it."""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

log = logging.getLogger(__name__)

TRANSIENT, PERMANENT, UNKNOWN = "transient", "permanent", "unknown"
# messages of exceptions that wrap a network/lock failure without a type or status to go by
_TRANSIENT_TEXT = ("database is locked", "connection refused", "connection reset", "connection aborted",
                   "max retries exceeded", "timed out", "temporarily unavailable", "failed to establish")


def classify_error(exc: BaseException) -> str:
    """TRANSIENT (retrying later can succeed), PERMANENT (the server answered: this request is wrong) or UNKNOWN.

    Rule (HTTP semantics): an MLflow error code maps to an HTTP status; 5xx, 408 and 429 are the server's
    condition, every other 4xx is about the request itself (INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST,
    RESOURCE_ALREADY_EXISTS, ...). Connection errors and timeouts are transient; a missing local file is
    permanent; anything else is UNKNOWN (retried a bounded number of times by the caller)."""
    import requests   # mlflow's HTTP layer; imported with it (heavy, on first use)
    from mlflow.exceptions import MlflowException  # late: mlflow (~1.6 s) loads on first use (client.py)

    text = str(exc).lower()
    if isinstance(exc, MlflowException):
        if any(t in text for t in _TRANSIENT_TEXT):
            return TRANSIENT
        status = exc.get_http_status_code()
        return TRANSIENT if status >= 500 or status in (408, 429) else PERMANENT
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        return TRANSIENT if status >= 500 or status in (408, 429) else PERMANENT
    if isinstance(exc, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
        return TRANSIENT
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return PERMANENT
    if any(t in text for t in _TRANSIENT_TEXT):
        return TRANSIENT
    return UNKNOWN


def is_retryable(exc: BaseException) -> bool:
    """Worth retrying (a bounded retry for UNKNOWN): everything but a permanent answer."""
    return classify_error(exc) != PERMANENT


def retry(fn: Callable[[], Any], *, attempts: int = 8, first: float = 0.2, what: str = "mlflow call") -> Any:
    """Call `fn`, retrying what `classify_error` does not call PERMANENT: exponential backoff from `first`
    seconds, capped at 5 s, `attempts` tries in all; the last error is raised."""
    delay = first
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if i == attempts - 1 or not is_retryable(exc):
                raise
            log.debug("%s failed (%s); retrying in %.1fs", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
