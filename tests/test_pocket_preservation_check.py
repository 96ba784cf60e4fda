"""pocket preservation-check: each preservation metric's sign-aligned Spearman with the judge's preservation."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from pocket.preservation_check import GROUND_TRUTH, correlations


def test_correlations_are_scipys_spearman_sign_aligned_over_rows_holding_both():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.3, 1.0, 30)
    clip = gt + rng.normal(0, 0.1, 30)
    lpips = 1 - gt + rng.normal(0, 0.2, 30)          # a distance: falls as preservation rises
    runs = pd.DataFrame({GROUND_TRUTH: gt, "eval/preservation/clip": clip, "eval/preservation/lpips": lpips})
    runs.loc[3, "eval/preservation/clip"] = np.nan   # a trial not evaluated yet is left out
    corr = correlations(runs)
    keep = runs.dropna(subset=["eval/preservation/clip"])
    assert corr["eval/preservation/clip"] == (pytest.approx(spearmanr(keep["eval/preservation/clip"],
                                                                      keep[GROUND_TRUTH]).statistic), 29)
    assert corr["eval/preservation/lpips"][0] == pytest.approx(-spearmanr(lpips, gt).statistic)
    assert corr["eval/preservation/lpips"][0] > 0.5     # sign-aligned: a good distance correlates positively
    assert "eval/preservation/features" not in corr
