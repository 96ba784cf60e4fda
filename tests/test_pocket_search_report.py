"""pocket search-report: the rank agreement of CLIP score with the ground truth, and the chosen-vs-fixed rows."""
from __future__ import annotations

import pandas as pd
import pytest
from scipy.stats import spearmanr

from pocket.search_report import CLIP, FIXED_METHOD, agreement, spearman, versus_fixed


def _runs(clip, acc, fid, seed="0"):
    return pd.DataFrame({CLIP: clip, "eval/pocket/prompt_accuracy": acc, "eval/pocket/preservation": [0.9] * len(clip),
                         "eval/pocket/fid_gt": fid, "prompt": "a square", "seed": seed,
                         "param/guidance.cfg_scale": 7.5, "param/optim.lr": 0.002,
                         "param/reg.reconstruction.weight": 0.1}).sort_values(CLIP, ascending=False)


def test_spearman_matches_scipy_with_ties():
    a = pd.Series([3.0, 1.0, 2.0, 2.0, 5.0, 4.0])
    b = pd.Series([10.0, 30.0, 20.0, 25.0, 5.0, 5.0])
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)


def test_agreement_is_sign_aligned():
    # CLIP ranks trials exactly as accuracy does, and exactly as FID does (lower FID = better): both +1
    runs = _runs([30.0, 20.0, 10.0], [0.9, 0.5, 0.1], [50.0, 80.0, 120.0])
    agree = agreement(runs)
    assert agree["eval/pocket/prompt_accuracy"] == pytest.approx(1.0)
    assert agree["eval/pocket/fid_gt"] == pytest.approx(1.0)
    # reversed ground truth: -1
    assert agreement(_runs([30.0, 20.0, 10.0], [0.1, 0.5, 0.9], [120.0, 80.0, 50.0]))["eval/pocket/fid_gt"] \
        == pytest.approx(-1.0)


def test_versus_fixed_reports_the_chosen_trial_and_the_fixed_seeds():
    runs = _runs([30.0, 20.0], [0.8, 0.4], [60.0, 90.0])
    fixed = pd.DataFrame({"prompt": "a square", "method": [FIXED_METHOD] * 3 + ["Fusion"], "seed": ["0", "1", "2", "0"],
                          CLIP: [25.0, 27.0, 29.0, 99.0], "eval/pocket/fid_gt": [70.0, 80.0, 90.0, 1.0]})
    text = versus_fixed(runs, fixed)
    lines = text.splitlines()
    assert lines[2].startswith("| CLIP-chosen") and "| 30.0 |" in lines[2] and "60.0" in lines[2]
    assert "seed 0 | 25.0 |" in lines[3] and "70.0" in lines[3]          # the fixed run of the search's seed
    assert "3 seeds | 27.0 ± 2.0 |" in lines[4] and "80.0 ± 10.0" in lines[4]   # the other method is not mixed in


def test_a_constant_ground_truth_metric_has_no_order_to_agree_with():
    agree = agreement(_runs([30.0, 20.0, 10.0], [0.0, 0.0, 0.0], [50.0, 80.0, 120.0]))
    assert agree["eval/pocket/prompt_accuracy"] != agree["eval/pocket/prompt_accuracy"]     # NaN
    assert agree["eval/pocket/fid_gt"] == pytest.approx(1.0)


def test_pick_line_ranks_the_picked_trial_and_the_clip_only_choices(tmp_path):
    """The picked trial is the one the parent run's `sweep.pick_run_id` names (a real MLflow store); its rank
    and the CLIP-only choices' ranks are by ground-truth FID within their own searches."""
    from mlflow.tracking import MlflowClient

    from pocket.search_report import pick_line
    from tracking import PICK_RUN_TAG

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("s", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(exp).info.run_id
    runs = _runs([30.0, 25.0, 20.0, 10.0], [0.9, 0.7, 0.5, 0.1], [90.0, 40.0, 60.0, 120.0]).reset_index(drop=True)
    runs["run_id"] = ["r0", "r1", "r2", "r3"]
    runs["run_name"] = ["trial_000", "trial_001", "trial_002", "trial_003"]
    runs["parent_run_id"] = parent
    client.set_tag(parent, PICK_RUN_TAG, "r1")
    other = _runs([50.0, 40.0, 30.0], [0.9, 0.5, 0.1], [70.0, 50.0, 60.0]).reset_index(drop=True)
    line = pick_line(runs, uri, {"a square": other})
    assert "pick (trial_001): ranks 1/4" in line           # FID 40 is the best of 90, 40, 60, 120
    assert "CLIP-only choice of the same search (row 1 above) ranks 3/4" in line   # FID 90
    assert "CLIP-only search of this prompt chose a trial ranked 3/3" in line      # FID 70 of 70, 50, 60
    client.delete_tag(parent, PICK_RUN_TAG)
    assert pick_line(runs, uri, {}) is None                 # a search without a pick rule: no line
