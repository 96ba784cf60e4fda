"""evaluation.table layout: the paper's columns first, per-attribute breakdowns in a second table, prompts cut
in Markdown; headline_metrics (what a sweep's parent run charts) leaves the breakdowns out."""
from __future__ import annotations

import pandas as pd

from evaluation.table import aggregate, detail_keys, format_markdown, headline_metrics

LONG = "a large red striped square on a black background, simple flat illustration, centered, high quality"


def _runs() -> pd.DataFrame:
    rows = []
    for i, (method, prompt) in enumerate([("nada", "a red circle"), ("fusion", "a red circle"), ("fusion", LONG)]):
        rows.append({"run_id": f"r{i}", "source": "pocket.pt", "prompt": prompt, "method": method, "seed": "0",
                     "latents_sha256": "x", "eval_errors": {},
                     "eval/pocket/acc_color": 0.5 + i / 10, "eval/pocket/acc_shape": 0.25, "eval/pocket/acc_size": 1.0,
                     "eval/pocket/fid_gt": 50.0, "eval/pocket/fid_source": 60.0,
                     "eval/pocket/prompt_accuracy": 0.75, "eval/kid": 0.01, "eval/feature_diversity": 0.3,
                     "eval/clip_score": 20.0 + i, "eval/fid": 10.0 - i})
    return pd.DataFrame(rows)


def test_paper_columns_first_and_breakdowns_apart():
    df = aggregate(_runs())
    specs = df.attrs["metrics"]
    main = [m.key for m in specs if not m.detail]
    assert main == ["eval/fid", "eval/clip_score", "eval/feature_diversity", "eval/kid", "eval/pocket/fid_gt",
                    "eval/pocket/fid_source", "eval/pocket/prompt_accuracy"]
    assert [m.key for m in specs if m.detail] == ["eval/pocket/acc_color", "eval/pocket/acc_shape", "eval/pocket/acc_size"]
    text = format_markdown(df)
    first, _, second = text.partition("Per-attribute metrics:")
    header = first.splitlines()[0]
    assert header.index("FID") < header.index("CLIP score") < header.index("Feature div.") < header.index("KID")
    assert "acc_color" not in first and "| acc_color | acc_shape | acc_size |" in second.splitlines()[2]
    assert LONG not in text and LONG[:20] in text            # cut for a terminal ...
    assert max(len(line) for line in text.splitlines()) < 200  # ... so a row fits a wide terminal


def test_headline_metrics_skip_breakdowns():
    keys = set(_runs().columns) - {"run_id", "source", "prompt", "method", "seed", "latents_sha256", "eval_errors"}
    assert detail_keys(keys) == {"eval/pocket/acc_color", "eval/pocket/acc_shape", "eval/pocket/acc_size"}
    assert headline_metrics(keys) == {"eval/fid", "eval/clip_score", "eval/feature_diversity", "eval/pocket/fid_gt",
                                      "eval/pocket/fid_source", "eval/pocket/prompt_accuracy"}
