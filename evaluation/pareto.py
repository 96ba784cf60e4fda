"""Pareto dominance over any number of objectives: the one home of the front that the sweep report draws
(evaluation/report.py) and a multi-objective search picks from (sweeps/pareto.py)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def pareto_mask(values, modes: Sequence[str]) -> np.ndarray:
    """[n, k] objective values -> bool [n]: True where no other row dominates the row (is at least as good on
    every objective and better on one; "max" / "min" per objective). Equal rows dominate neither."""
    v = np.asarray(values, dtype=np.float64).reshape(len(values), len(modes))
    v = v * np.array([1.0 if m == "max" else -1.0 for m in modes])   # maximise every column
    keep = np.ones(len(v), dtype=bool)
    for i in range(len(v)):
        others = np.delete(v, i, axis=0)
        keep[i] = not np.any(np.all(others >= v[i], axis=1) & np.any(others > v[i], axis=1))
    return keep
