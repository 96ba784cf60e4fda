"""The one error class every checkpoint reader raises (defined in trainables/errors.py)."""

from __future__ import annotations

from trainables.errors import CheckpointError

__all__ = ["CheckpointError"]
