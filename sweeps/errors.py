"""The sweep package's errors: every message names the file, the line or field path, and the fix."""
from __future__ import annotations


class SweepError(ValueError):
    """A sweep file problem: the message names the file, the line or field path, and the fix."""


class MissingModelError(SweepError):
    """A model a trial needs is not on this machine (or its evaluation cannot run): raised before any trial starts."""
