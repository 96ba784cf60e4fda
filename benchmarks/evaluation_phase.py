"""Seconds of the pocket demo's evaluation phase, several evaluations in ONE process (a reused sweep worker).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/evaluation_phase.py --out /tmp/evalbench [--repo DIR]
                                                                       [--prompts "a red circle" ...]

What a demo trial's `_evaluate` runs (sweeps/trial.py): `evaluate_run` on an adapted pocket generator with the
evaluation block of sweeps/pocket/demo.yaml, logging into a trial run of a local MLflow store, with the
frozen-model cache on (as in every sweep worker) and one torch thread (the demo's `train.threads`). The
"adapted" generators are the pocket source with small seeded weight noise (sampling costs the same). The
evaluation cache dir is fresh under --out, so the first evaluation renders the source samples; the pocket
reference sets (POCKET_CACHE) are whatever this machine already holds. `--repo` times another checkout (e.g.
an older commit unpacked with `git archive COMMIT | tar -x -C DIR`). Prints one line per evaluation and writes
`result.json` (seconds and every metric) under --out, so two checkouts' metrics can be compared exactly.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["a red circle", "a striped circle", "a red circle", "a striped circle"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="work folder (generators, samples, MLflow store, result.json)")
    ap.add_argument("--repo", default=str(REPO), help="the checkout to time (default: this one)")
    ap.add_argument("--prompts", nargs="+", default=PROMPTS, help="one evaluation per prompt, in order")
    args = ap.parse_args(argv)
    repo, out = Path(args.repo).resolve(), Path(args.out)
    sys.path.insert(0, str(repo))
    os.chdir(repo)   # the demo block's model paths are relative to the checkout
    # late: the checkout to time is chosen on the command line
    import torch
    import yaml
    from mlflow.tracking import MlflowClient

    from evaluation.config import EvalConfig
    from evaluation.runner import evaluate_run
    from trainables.frozen import model_cache
    from trainables.generators import load_generator, save_rosinality

    torch.set_num_threads(1)
    model_cache.enable(4)
    out.mkdir(parents=True, exist_ok=True)
    block = yaml.safe_load((repo / "sweeps" / "pocket" / "demo.yaml").read_text())["evaluation"]
    cfg = EvalConfig.model_validate(dict(block, cache_dir=str(out / "cache")))
    source = repo / "pocket" / "models" / "stylegan2" / "pocket-circles-32.pt"
    uri = f"sqlite:///{out.resolve()}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment(f"evaluation-phase-{time.time_ns()}")
    rows = []
    for i, prompt in enumerate(args.prompts):
        g = load_generator(source)
        gen = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for p in g.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=gen))
        adapted = out / f"adapted{i}.pt"
        save_rosinality(g, adapted)
        run_id = client.create_run(exp).info.run_id
        tic = time.perf_counter()
        metrics = evaluate_run(adapted, prompt, cfg, uri, run_id=run_id, source_generator=str(source),
                               out_dir=out / f"trial{i}" / "eval")
        seconds = time.perf_counter() - tic
        if metrics.errors:
            print(f"evaluation {i} FAILED metrics: {sorted(metrics.errors)}", file=sys.stderr)
            return 1
        rows.append({"prompt": prompt, "seconds": seconds, "metrics": dict(metrics)})
        print(f"evaluation {i} ({prompt}): {seconds:.2f} s", flush=True)
    (out / "result.json").write_text(json.dumps(rows, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
