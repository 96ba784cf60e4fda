"""The error classes several parts of the project raise or catch: the bottom of the import graph.

It imports nothing from the project, so any module (refs, guidance, generators, preflight, evaluation,
sweeps) can import it without making a cycle.
"""
from __future__ import annotations

from pathlib import Path


class ConfigError(ValueError):
    """A config that cannot be used; the message names the source, the field path and the fix."""


class ModelNotFoundError(FileNotFoundError):
    """A model reference that resolves to nothing here; the message says where we looked and how to fetch."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read safely or does not fit the generator's layout.

    The message names the file, the offending key or global, and what was expected.
    """

    def __init__(self, path: str | Path | None, problem: str, expected: str | None = None):
        self.path = None if path is None else str(path)
        self.problem = problem
        self.expected = expected
        where = f"{self.path}: " if self.path else ""
        msg = f"{where}{problem}"
        if expected:
            msg += f" (expected {expected})"
        super().__init__(msg)
