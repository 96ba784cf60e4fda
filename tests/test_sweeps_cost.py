"""A sweep's cost before it runs: validate prints it; `resources.gpu: auto` packs trials by traced peak memory."""
from __future__ import annotations

import math

import pytest

from conftest import REPO
from sweeps.cost import CONTEXT_GB, PACKING_MARGIN, resolve_auto_gpu, sweep_cost
from sweeps.errors import SweepError
from sweeps.spec import load_sweep


def _paper_sweep(tmp_path, monkeypatch, resources: str, extra_grid: str = ""):
    """The paper's FFHQ Fusion run (architectures only: SD 1.x and StyleGAN2-1024 without weights)."""
    monkeypatch.setenv("MODELS_DIR", str(tmp_path / "no-models"))
    path = tmp_path / "sweep.yaml"
    path.write_text(f"name: packed\nbase: {REPO / 'sweeps/paper/base/ffhq_1024.yaml'}\n"
                    f"grid:\n  guidance.precision: [bf16]\n{extra_grid}resources: {resources}\n")
    return load_sweep(path)


def test_auto_packs_as_many_trials_as_fit(tmp_path, monkeypatch):
    sweep = _paper_sweep(tmp_path, monkeypatch, "{gpu: auto, gpu_type: H100}", "  train.batch_size: [1, 4]\n")
    cost = sweep_cost([t.config for t in sweep.trials], "H100")
    peaks = sorted(r.peak_bytes for _, r in cost.per_trial)
    assert peaks[0] < peaks[1]                                   # batch 4 needs more than batch 1
    fraction = resolve_auto_gpu(sweep)
    need = peaks[1] * PACKING_MARGIN + CONTEXT_GB * 1e9          # the largest trial sets the share
    assert fraction == pytest.approx(1 / math.floor(80e9 / need))
    assert sweep.spec.resources.gpu == fraction and 0 < fraction < 1


def test_auto_refuses_a_trial_no_gpu_of_that_type_holds(tmp_path, monkeypatch):
    sweep = _paper_sweep(tmp_path, monkeypatch, "{gpu: auto, gpu_type: L4}", "  train.batch_size: [16]\n")
    with pytest.raises(SweepError, match=r"sweep.yaml:\d+: resources.gpu: auto: .* L4 has 24 GB: lower train.batch_size"):
        resolve_auto_gpu(sweep)


def test_cpu_sweeps_take_no_gpu_and_unknown_gpu_types_are_refused(tmp_path):
    pocket = tmp_path / "p.yaml"
    text = (REPO / "sweeps/pocket/demo.yaml").read_text().replace("resources: {cpu: 1, gpu: 0}",
                                                                  "resources: {cpu: 1, gpu: auto}")
    pocket.write_text(text.replace("pocket/models", str(REPO / "pocket/models")))
    sweep = load_sweep(pocket)
    assert resolve_auto_gpu(sweep) == 0.0
    bad = tmp_path / "bad.yaml"
    bad.write_text(pocket.read_text().replace("gpu: auto}", "gpu: auto, gpu_type: V100}"))
    with pytest.raises(SweepError, match="gpu_type 'V100' is not one of H100"):
        load_sweep(bad)


def test_sweep_cost_text_and_hours(tmp_path, monkeypatch):
    sweep = _paper_sweep(tmp_path, monkeypatch, "{gpu: 1}")
    cost = sweep_cost([t.config for t in sweep.trials], "A100")
    (cfg, report), = cost.per_trial
    assert cost.hours()["A100"] == pytest.approx(cfg.train.iterations * report.step_seconds("A100") / 3600)
    text = cost.text()
    assert "TFLOP" in text and "GPU-hours on A100" in text and "SD 1.x" in text
