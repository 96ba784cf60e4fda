"""The adaptation loop on tiny random-weight models: outputs, frozen sets, resume, NaN guard, CLI."""
from __future__ import annotations

import json
import os
import subprocess
import textwrap
import sys

import pytest
import torch

from conftest import StubGuidance, REPO, tiny_adapt_dict
from trainables.adaptation.callbacks import Callback
from trainables.config_io import validate_config
from trainables.generators import load_generator
from trainables.adaptation.loop import NonFiniteGradientError, adapt
from trainables.adaptation.trainable_set import rank_wplus_layers


def _cfg(tiny_models, out, **over):
    return validate_config(tiny_adapt_dict(tiny_models, out, **over))


def test_fusion_run_writes_generator_grids_and_metrics(tiny_models, tmp_path):
    seen = []

    class Record(Callback):
        def on_samples(self, step, grid_path):
            seen.append((step, grid_path))

    result = adapt(_cfg(tiny_models, tmp_path / "run"), callbacks=[Record()], progress=False)
    assert result.steps == 4 and result.generator_path.is_file() and result.final_grid_path.is_file()
    assert [s for s, _ in seen] == [2, 4]
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [1, 2, 3, 4]
    assert all(20 <= l["train/t"] <= 980 for l in lines) and lines[0]["train/grad_norm"] > 0
    adapted = load_generator(result.generator_path)  # the rosinality file loads back
    source = load_generator(tiny_models["generator"])
    assert adapted.cfg.size == source.cfg.size


def test_only_the_fusion_set_changes(tiny_models, tmp_path):
    """Fusion trains convs.* (conv weight, modulation weight, noise strength); biases, mapping, const,
    conv1 and every ToRGB stay bit-identical."""
    result = adapt(_cfg(tiny_models, tmp_path / "run"), progress=False)
    before = load_generator(tiny_models["generator"]).state_dict()
    after = load_generator(result.generator_path).state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing was trained"
    assert all(k.startswith("convs.") and not k.endswith(".bias") for k in changed), sorted(changed)
    assert any(k.endswith("conv.weight") for k in changed) and any("modulation.weight" in k for k in changed)


def test_nada_trains_const_conv1_and_convs(tiny_models, tmp_path):
    cfg = _cfg(tiny_models, tmp_path / "nada", method="nada", optim__freeze_bias=False)
    result = adapt(cfg, progress=False)
    before = load_generator(tiny_models["generator"]).state_dict()
    after = load_generator(result.generator_path).state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    prefixes = {k.split(".")[0] for k in changed}
    assert prefixes <= {"input", "conv1", "convs"} and "convs" in prefixes
    assert not any(k.startswith(("style.", "to_rgb1.", "to_rgbs.")) for k in changed)


class _StopAt(Callback):
    """Simulates a crash right after the checkpoint of `step` is written."""

    def __init__(self, step):
        self.step = step

    def on_checkpoint(self, step, ckpt_dir):
        if step == self.step:
            raise KeyboardInterrupt


def test_resume_is_bitwise_identical(tiny_models, tmp_path):
    full = adapt(_cfg(tiny_models, tmp_path / "full", train__iterations=6), progress=False)
    cfg = _cfg(tiny_models, tmp_path / "cut", train__iterations=6, train__checkpoint_every=3)
    with pytest.raises(KeyboardInterrupt):
        adapt(cfg, callbacks=[_StopAt(3)], progress=False)
    resumed = adapt(cfg, resume_from=tmp_path / "cut" / "checkpoints" / "step_000003", progress=False)
    a, b = torch.load(full.generator_path)["g_ema"], torch.load(resumed.generator_path)["g_ema"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and the run really did train after the resume point
    mid = torch.load(tmp_path / "cut" / "checkpoints" / "step_000003" / "train_state.pt", weights_only=False)
    assert any(not torch.equal(mid["generator"][k], b[k]) for k in b)


def test_layer_selection_picks_the_most_moved_entries():
    # render/backward that move W+ entry i by (i % 5): the top-3 must be entries whose index % 5 == 4, 3, ...
    n, d = 10, 6
    weights = torch.tensor([float(i % 5) for i in range(n)])
    wp = torch.zeros(2, n, d)

    def backward(x):
        (x * weights[None, :, None]).sum().backward()

    chosen, movement = rank_wplus_layers(wp, render=lambda c: c, selection_backward=backward, k=3, iterations=2, lr=0.1)
    assert set(chosen) <= {4, 9, 3, 8} and {4, 9} <= set(chosen)
    assert torch.allclose(movement, 0.2 * weights)


def test_layer_selection_run_trains_only_chosen_layers(tiny_models, tmp_path):
    cfg = _cfg(tiny_models, tmp_path / "sel", layers__k=1, train__iterations=1)
    result = adapt(cfg, progress=False)
    before = load_generator(tiny_models["generator"]).state_dict()
    after = load_generator(result.generator_path).state_dict()
    changed = {k.rsplit(".", 2)[0] for k in before if not torch.equal(before[k], after[k])}
    layers = {c.split(".conv")[0].split(".noise")[0] for c in changed}
    assert len({l if not l.startswith("convs.") else ".".join(l.split(".")[:2]) for l in layers}) == 1


class _NanGuide(StubGuidance):
    """A guidance that injects NaN: the loop must stop before the optimiser step."""

    def sample_timestep(self, rng):
        return 100

    def backward(self, x_train, x_frozen, t, rng):
        (x_train * float("nan")).sum().backward()
        return {"loss/sds_mse": 1.0}


def test_nan_gradient_stops_without_saving(tiny_models, tmp_path):
    cfg = _cfg(tiny_models, tmp_path / "nan", train__checkpoint_every=1)
    with pytest.raises(NonFiniteGradientError, match="non-finite gradient in convs"):
        adapt(cfg, guidance=_NanGuide(), progress=False)
    assert not (tmp_path / "nan" / "generator.pt").exists()
    assert not (tmp_path / "nan" / "checkpoints").exists()


def test_cli_adapt_runs_tiny_models(tiny_models, tmp_path):
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_adapt_dict(tiny_models, tmp_path / "cli")))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "trainables", "adapt", "--config", str(path), "--quiet",
                           "--set", "train.iterations=2"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "adapted generator:" in proc.stdout and (tmp_path / "cli" / "generator.pt").is_file()
    bad = subprocess.run([sys.executable, "-m", "trainables", "adapt", "--config", str(path),
                          "--set", "guidance.cfg_scal=3"], cwd=REPO, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "guidance.cfg_scal: unknown field" in bad.stderr


def test_train_threads_also_bound_numpy_blas_pools(tiny_models, tmp_path):
    """train.threads sizes torch's pool AND numpy/scipy's BLAS pools (evaluation's sqrtm runs in the same process);
    in a fresh process, so the limit does not leak into this one."""
    code = textwrap.dedent(f"""
        import json, numpy, threadpoolctl
        from conftest import tiny_adapt_dict
        from trainables.config_io import validate_config
        from trainables.adaptation.loop import adapt
        before = [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
        cfg = validate_config(tiny_adapt_dict({{k: __import__("pathlib").Path(v) for k, v in {json.dumps({k: str(v) for k, v in tiny_models.items()})}.items()}},
                              __import__("pathlib").Path({str(tmp_path)!r}), train__threads=1, train__iterations=1))
        adapt(cfg, progress=False)
        import scipy.linalg   # loaded after the limit (as evaluation's FID loads it): its own OpenBLAS
        after = [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
        print(json.dumps({{"before": before, "after": after}}))
    """)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}", "OMP_NUM_THREADS": "2",
           "OPENBLAS_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    pools = json.loads(out.stdout.strip().splitlines()[-1])
    assert pools["before"] and max(pools["before"]) == 2, pools     # the machine-sized pool the test starts from
    assert len(pools["after"]) > len(pools["before"]) and pools["after"] == [1] * len(pools["after"]), pools
