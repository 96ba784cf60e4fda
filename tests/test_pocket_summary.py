"""pocket.summary condenses trial rows: per-seed means over a kind's prompts, then mean +- std over seeds."""
from __future__ import annotations

import pandas as pd

from pocket import summary


def _runs():
    rows = []
    for seed, (acc_a, acc_b) in enumerate([(1.0, 0.5), (0.0, 0.5)]):
        for prompt, acc in (("a red circle", acc_a), ("a square", acc_b)):
            rows.append({"prompt": prompt, "method": "Fusion", "seed": str(seed), "kind": "short",
                         "eval/pocket/prompt_accuracy": acc, "eval/pocket/preservation": 1.0,
                         "eval/pocket/fid_gt": 10.0 * (seed + 1)})
        rows.append({"prompt": "a red circle", "method": "NADA", "seed": str(seed), "kind": "short",
                     "eval/pocket/prompt_accuracy": 0.2, "eval/pocket/preservation": 1.0,
                     "eval/pocket/fid_gt": 100.0})
    return pd.DataFrame(rows)


def test_by_kind_spreads_over_seeds_not_prompts():
    text = summary.by_kind(_runs())
    fusion = next(line for line in text.splitlines() if "| Fusion |" in line)
    # seed 0: mean(1.0, 0.5) = 0.75; seed 1: mean(0.0, 0.5) = 0.25 -> 0.50 +- 0.35 (ddof 1)
    assert "| short (2) | Fusion | 2 | 0.50 ± 0.35 | 1.00 ± 0.00 | 15.0 ± 7.1 |" in fusion
    nada = next(line for line in text.splitlines() if "| NADA |" in line)
    assert "0.20 ± 0.00" in nada


def test_by_prompt_orders_methods_and_prompts():
    text = summary.by_prompt(_runs()).splitlines()
    assert text[0] == "| prompt | NADA | Fusion |"
    assert text[2].startswith("| a square |") and "- |" in text[2]          # catalogue order; NADA missing
    assert text[3] == "| a red circle | 0.20 / 1.00 / 100 | 0.50 / 1.00 / 15 |"
