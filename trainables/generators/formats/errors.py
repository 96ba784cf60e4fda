"""The one error class every checkpoint reader raises."""

from __future__ import annotations

from pathlib import Path


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read safely or does not fit the StyleGAN2 layout.

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
